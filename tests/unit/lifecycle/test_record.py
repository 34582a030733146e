"""The run's records as TensorBoard reads them: every status a run can end with has a session
status this TensorBoard knows, and an interrupted run's records close without an error."""

from __future__ import annotations

import pytest
from tensorboard.plugins.hparams.api_pb2 import Status
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from src.core.files import FINISHED
from src.lifecycle.trackers.files import session_end

EXPECTED = {"completed": "STATUS_SUCCESS", "diverged": "STATUS_FAILURE",
            "failed": "STATUS_FAILURE", "pruned": "STATUS_UNKNOWN",
            "interrupted": "STATUS_UNKNOWN"}


@pytest.mark.parametrize("status", sorted({*FINISHED, "failed", "interrupted"}))
def test_every_status_has_a_tensorboard_session_status(status):
    summary = session_end(status)
    data = HParamsPluginData.FromString(summary.value[0].metadata.plugin_data.content)
    assert data.session_end_info.status == Status.Value(EXPECTED[status])
