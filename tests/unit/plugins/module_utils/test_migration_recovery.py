"""migration_recovery.py (issue 17): the decision whether a guest a failed migration left paused
on its source may be resumed there, at its exact boundaries, and what the host answers are read
into. The whole recovery (migrate_guest's _recover against fake hosts) is tested in
test_migration.py; a real failed migration on the lab (tests/lab/test_migrate_drain.py).
"""
import pytest

from ansible_collections.virtfleet.cluster.plugins.module_utils import migration_recovery
from ansible_collections.virtfleet.cluster.plugins.module_utils.libvirt_connection import (
    VIR_DOMAIN_PAUSED, VIR_DOMAIN_PAUSED_POSTCOPY, VIR_DOMAIN_RUNNING, VIR_ERR_NO_DOMAIN)
from ansible_collections.virtfleet.cluster.plugins.module_utils.migration_options import MigrationOptions
from ansible_collections.virtfleet.cluster.plugins.module_utils.migration_recovery import (
    MigrationError, may_resume_on_source)

MIB = 1024 * 1024
PAUSED_SRC = (True, VIR_DOMAIN_PAUSED, 2)  # reason 2: paused for the migration
NO_COPY = (False, None, None)
RUNNING_COPY = (True, VIR_DOMAIN_RUNNING, 1)
JOB_FAILED = 4
JOB_CANCELLED = 5
VIR_DOMAIN_SHUTOFF = 5  # not among libvirt_connection's constants: the collection never asks for it


def decide(src=PAUSED_SRC, dst=NO_COPY, was_running=True, postcopy=False, job=None, **kwargs):
    return may_resume_on_source(src, dst, was_running, postcopy, job, **kwargs)


# --- two live copies on one disk: never -------------------------------------------------------

def test_a_paused_source_with_an_active_destination_copy_is_never_resumed():
    assert decide(dst=RUNNING_COPY, source_name="hv-1", dest_name="hv-2") == (
        False, "there is an active copy on hv-2")
    # Not even when libvirt's job result on the source says the job failed early.
    assert not decide(dst=RUNNING_COPY, job={"type": JOB_FAILED, "data_remaining": 40 * MIB})[0]
    assert not decide(dst=(True, VIR_DOMAIN_PAUSED, 1))[0]  # paused there is active too


def test_a_destination_that_answered_without_an_active_copy_lets_the_source_resume():
    assert decide(dst=NO_COPY, dest_name="hv-2") == (True, "hv-2 answered and has no active copy")
    assert decide(dst=(False, VIR_DOMAIN_SHUTOFF, 0))[0]  # defined there, not running


# --- a destination that cannot be asked: only a job that stopped with data left proves it ---

@pytest.mark.parametrize("job_type, words", [(JOB_FAILED, "failed"), (JOB_CANCELLED, "was cancelled")])
def test_one_byte_still_to_send_proves_the_switch_over_never_happened(job_type, words):
    allowed, why = decide(dst=None, job={"type": job_type, "data_remaining": 1}, source_name="hv-1", dest_name="hv-2")
    assert allowed
    assert why == ("hv-2 could not be asked, but libvirt's job result on hv-1 says the migration %s before"
                   " the switch-over (1 B still to send)" % words)


@pytest.mark.parametrize("job", [
    {"type": JOB_FAILED, "data_remaining": 0},      # everything was sent: the destination may run it
    {"type": JOB_FAILED},                            # no figure: not a proof
    {"type": JOB_FAILED, "data_remaining": None},
    {"type": 3, "data_remaining": 40 * MIB},         # completed
    {"type": 0},                                     # libvirt kept no result
    {},
    None,
])
def test_without_proof_from_the_job_result_an_unreachable_destination_keeps_the_guest_paused(job):
    allowed, why = decide(dst=None, job=job, source_name="hv-1", dest_name="hv-2")
    assert not allowed
    assert why == ("hv-2 could not be asked and libvirt's job result on hv-1 does not show that the migration"
                   " stopped before the switch-over, so a copy may run on hv-2")


def test_the_reason_the_destination_could_not_be_asked_is_quoted():
    allowed, why = decide(dst=None, dest_error="Connection reset by peer")
    assert not allowed
    assert why.startswith("the destination could not be asked (Connection reset by peer) and libvirt's job result"
                          " on the source does not show")


def test_the_size_still_to_send_is_told_for_people():
    why = decide(dst=None, job={"type": JOB_FAILED, "data_remaining": 40 * MIB})[1]
    assert "(40 MiB still to send)" in why


# --- nothing to resume, or not ours to resume -------------------------------------------------

def test_a_source_that_cannot_be_asked_is_not_resumed():
    assert decide(src=None, source_name="hv-1") == (False, "hv-1 could not be asked")


@pytest.mark.parametrize("src", [(True, VIR_DOMAIN_RUNNING, 1), (False, VIR_DOMAIN_PAUSED, 2), NO_COPY])
def test_only_an_active_paused_source_copy_is_resumed(src):
    assert decide(src=src, source_name="hv-1") == (False, "it is not paused on hv-1")


def test_a_guest_paused_before_the_migration_stays_paused():
    assert decide(was_running=False) == (False, "it was paused before the migration")


@pytest.mark.parametrize("src, postcopy", [(PAUSED_SRC, True), ((True, VIR_DOMAIN_PAUSED, VIR_DOMAIN_PAUSED_POSTCOPY), False)])
def test_post_copy_memory_split_between_hosts_is_never_resumed_on_the_source(src, postcopy):
    allowed, why = decide(src=src, postcopy=postcopy, source_name="hv-1", dest_name="hv-2")
    assert not allowed
    assert why == ("the migration was in post-copy: the guest's memory is split between hv-1 and hv-2, so the"
                   " copy on hv-1 is not the whole guest")


# --- what the hosts answer ---------------------------------------------------------------------

class _Conn:
    def __init__(self, dom=None, error_code=None):
        self.dom, self.error_code = dom, error_code

    def lookupByUUIDString(self, uuid):
        if self.error_code is not None:
            libvirt = pytest.importorskip("libvirt")
            exc = libvirt.libvirtError("lookup failed")
            exc.err = (self.error_code, 10, "lookup failed", 2, None, None, None, 0, 0)
            raise exc
        return self.dom


class _Dom:
    def __init__(self, state=(VIR_DOMAIN_PAUSED, 2), active=1, job=None, job_error=None):
        self._state, self._active, self.job, self.job_error = state, active, job, job_error

    def state(self):
        return list(self._state)

    def isActive(self):
        return self._active

    def jobStats(self, flags):
        assert flags == migration_recovery.VIR_DOMAIN_JOB_STATS_COMPLETED
        if self.job_error:
            raise self.job_error
        return self.job


def test_a_guest_the_host_does_not_know_is_absent_not_an_error():
    assert migration_recovery.lookup_guest(_Conn(error_code=VIR_ERR_NO_DOMAIN), "u") is None
    assert migration_recovery.guest_state(_Conn(error_code=VIR_ERR_NO_DOMAIN), "u") == (False, None, None)
    assert migration_recovery.completed_job(_Conn(error_code=VIR_ERR_NO_DOMAIN), "u") is None


def test_any_other_lookup_error_means_the_host_could_not_be_asked():
    libvirt = pytest.importorskip("libvirt")
    with pytest.raises(libvirt.libvirtError):
        migration_recovery.guest_state(_Conn(error_code=38), "u")
    assert migration_recovery.completed_job(_Conn(error_code=38), "u") is None


def test_guest_state_is_active_state_and_reason():
    assert migration_recovery.guest_state(_Conn(_Dom((VIR_DOMAIN_PAUSED, 2), 1)), "u") == (True, VIR_DOMAIN_PAUSED, 2)
    assert migration_recovery.guest_state(_Conn(_Dom((VIR_DOMAIN_SHUTOFF, 0), 0)), "u") == (False, VIR_DOMAIN_SHUTOFF, 0)


def test_completed_job_reads_libvirts_result_or_nothing():
    assert migration_recovery.completed_job(_Conn(_Dom(job={"type": 4, "data_remaining": 5})), "u") == {
        "type": 4, "data_remaining": 5}
    assert migration_recovery.completed_job(_Conn(_Dom(job=None)), "u") == {}
    assert migration_recovery.completed_job(_Conn(_Dom(job_error=RuntimeError("gone"))), "u") is None


# --- what the message says -------------------------------------------------------------------

def test_held_location_and_text_name_the_state():
    assert migration_recovery.held_location("source", VIR_DOMAIN_PAUSED) == "source (paused)"
    assert migration_recovery.held_text("web-3", "hv-1", VIR_DOMAIN_PAUSED) == "web-3 is PAUSED on hv-1"
    assert migration_recovery.held_text("web-3", "hv-1", VIR_DOMAIN_SHUTOFF) == "web-3 is on hv-1 but not running (shutoff)"


def test_the_resume_hint_checks_the_other_host_first_and_only_for_a_guest_that_ran():
    hint = migration_recovery.held_hint("web-3", VIR_DOMAIN_PAUSED, True, "hv-1", "qemu://hv-1", "hv-2", "qemu://hv-2")
    assert hint == (" First check that hv-2 does not run it: `virsh -c qemu://hv-2 list --all`; once it shows no"
                    " running web-3, resume it on hv-1: `virsh -c qemu://hv-1 resume web-3`.")
    check_only = " Check it with `virsh -c qemu://hv-1 domstate --reason web-3`."
    assert migration_recovery.held_hint("web-3", VIR_DOMAIN_PAUSED, False, "hv-1", "qemu://hv-1", "hv-2", "x") == check_only
    assert migration_recovery.held_hint("web-3", VIR_DOMAIN_SHUTOFF, True, "hv-1", "qemu://hv-1", "hv-2", "x") == check_only


def test_suggestions_follow_the_options_already_set():
    stalled = migration_recovery.suggestion(
        MigrationOptions(auto_converge=True, postcopy=True, max_downtime_ms=300), "stalled")
    assert stalled == "; try: raise max_downtime_ms"
    assert migration_recovery.suggestion(MigrationOptions(), "timeout") == (
        "; raise timeout or timeout_per_gib, or use auto_converge / parallel_connections")
    assert migration_recovery.suggestion(MigrationOptions(), "libvirt-error") == ""


@pytest.mark.parametrize("text, words", [
    ("Attempt to migrate guest to the same host", "machine-id"),
    ("Postcopy is not supported", "userfaultfd"),
    ("internal error: client socket is closed", "did the destination daemon or host go away?"),
    ("unable to connect to server: Connection refused", "dest_migration_uri"),
])
def test_every_known_libvirt_error_has_its_hint(text, words):
    assert words in migration_recovery.hint_for(text)


def test_moved_means_the_guest_ended_on_the_destination():
    assert MigrationError("x", location="destination").moved
    assert MigrationError("x", location="destination (paused)").moved
    assert not MigrationError("x", location="both").moved
    assert not MigrationError("x").moved  # unknown


def test_the_result_of_a_migration_error_carries_every_field():
    error = MigrationError("msg", guest="g", source="hv-1", destination="hv-2", reason="stalled",
                           location="source (paused)", paused_on="hv-1")
    assert error.as_dict() == {"guest": "g", "source": "hv-1", "destination": "hv-2", "error": "msg",
                               "reason": "stalled", "location": "source (paused)", "running_on": None,
                               "paused_on": "hv-1", "where": "hv-1 (paused)", "last_progress": None}
    assert error.result == error.as_dict()
    assert MigrationError("x", location="source ()", paused_on="hv-1").where == "hv-1 (paused)"


def test_two_stall_remedies_are_joined_with_or():
    assert migration_recovery.suggestion(MigrationOptions(auto_converge=True), "stalled") == (
        "; try: allow post-copy or set max_downtime_ms")


def test_an_error_without_a_location_is_unknown_and_carries_its_last_progress():
    from ansible_collections.virtfleet.cluster.plugins.module_utils.migration_watchdog import MigrationProgress
    assert MigrationError("x").location == "unknown" and MigrationError("x").where == "unknown"
    progress = MigrationProgress("g", "hv-1", "hv-2", "precopy", {"data_total": 100, "data_remaining": 40}, 3.0)
    assert MigrationError("x", last_progress=progress).as_dict()["last_progress"] == progress.as_dict()
