"""Run a module's main() in-process, as Ansible would on a host: the unit tests' one way to call
a module with its real argument spec and read its exit_json/fail_json result."""
import contextlib
import io
import json

import pytest
from ansible.module_utils import _internal, basic


def run_module_main(module, args, check_mode=False):
    """Run ``module.main()`` with ``args``; returns (exit code, result dict)."""
    arguments = dict(args, _ansible_check_mode=check_mode, _ansible_tmpdir=None, _ansible_remote_tmp="/tmp")
    basic._ANSIBLE_ARGS = json.dumps({"ANSIBLE_MODULE_ARGS": arguments}).encode()
    basic._ANSIBLE_PROFILE = "legacy"
    out = io.StringIO()
    code = None
    # A module runs on the host, never on the controller: once a test of a controller plugin
    # (action, inventory) has imported Ansible's controller side, warnings would be printed
    # instead of returned in the result.
    was_controller, _internal.is_controller = _internal.is_controller, False
    try:
        with contextlib.redirect_stdout(out):
            module.main()
    except SystemExit as done:
        code = done.code
    else:
        pytest.fail("%s.main() returned without exit_json/fail_json" % module.__name__)
    finally:
        basic._ANSIBLE_ARGS = None
        _internal.is_controller = was_controller
    return code, json.loads(out.getvalue())
