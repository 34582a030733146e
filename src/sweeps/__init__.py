"""The sweep layer: one job (lock, record, failures), the sweepers of train.py -m and tune.py,
and the command-line checks and error lines the entry points share."""
