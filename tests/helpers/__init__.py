"""What the tests share: composing the real configs and starting the real entry points (runs),
dataset files in their on-disk formats (datafiles), a folder of mixed run kinds (mixed_runs), a
real PostgreSQL server (postgres), and small fixtures of the pruning and exchange tests."""
