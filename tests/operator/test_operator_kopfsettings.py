"""kopfsettings: the process settings from the environment, and what they set in kopf."""

from __future__ import annotations

import logging
import warnings

import kopf
import pytest
from sipstack_operator import kopfsettings as ks


def test_from_env_defaults_and_values() -> None:
    process = ks.ProcessSettings.from_env({"POD_NAME": "sipstack-operator-7d9f-x2k4q"})
    assert process.pod_name == "sipstack-operator-7d9f-x2k4q"
    assert process.peering_name == "sipstack-operator"
    assert not process.standalone
    assert process.priority == ks.priority_of("sipstack-operator-7d9f-x2k4q")
    other = ks.ProcessSettings.from_env(
        {
            "POD_NAME": "op-b",
            "SIPSTACK_PEERING": "fleet-east",
            "SIPSTACK_STANDALONE": "true",
            "SIPSTACK_PEERING_PRIORITY": "100",
        }
    )
    assert (other.peering_name, other.standalone, other.priority) == ("fleet-east", True, 100)
    assert ks.ProcessSettings.from_env({}).pod_name  # the host name


def test_priorities_differ_per_pod_and_stay_per_name() -> None:
    names = [f"sipstack-operator-5c8d7-{i:05d}" for i in range(200)]
    priorities = {ks.priority_of(n) for n in names}
    assert len(priorities) == len(names)
    assert all(0 <= p < 2**31 for p in priorities)
    assert ks.priority_of(names[0]) == ks.priority_of(names[0])


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SIPSTACK_PEERING_PRIORITY": "high"}, "SIPSTACK_PEERING_PRIORITY"),
        ({"SIPSTACK_STANDALONE": "maybe"}, "SIPSTACK_STANDALONE"),
        ({"SIPSTACK_PEERING": "no/slashes"}, "SIPSTACK_PEERING"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ks.SettingsError, match=named):
        ks.ProcessSettings.from_env(env)


def test_configure_sets_peering_posting_and_queueing_without_deprecations() -> None:
    settings = kopf.OperatorSettings()
    process = ks.ProcessSettings(pod_name="sipstack-operator-abc", priority=4242)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # settings.batching would warn (DeprecationWarning)
        ks.configure(settings, process)
    assert not settings.peering.standalone
    assert settings.peering.mandatory
    assert (settings.peering.name, settings.peering.priority) == ("sipstack-operator", 4242)
    assert settings.posting.reporting_component == "sipstack-operator"
    assert settings.posting.reporting_instance == "sipstack-operator-abc"
    assert settings.posting.event_name_prefix == "sipstack-operator-"
    assert settings.posting.level == logging.WARNING
    assert tuple(settings.queueing.error_delays) == ks.ERROR_DELAYS
    assert settings.persistence.finalizer == "sipstack.com/operator"
    assert settings.scanning.disabled
    assert settings.background.cancellation_polling <= 5  # deletes do not wait a minute


def test_configure_keeps_a_standalone_run() -> None:
    given = kopf.OperatorSettings()
    given.peering.standalone = True  # kopf run --standalone
    ks.configure(given, ks.ProcessSettings(pod_name="dev"))
    assert given.peering.standalone and not given.peering.mandatory
    asked = kopf.OperatorSettings()
    ks.configure(asked, ks.ProcessSettings(pod_name="dev", standalone=True))
    assert asked.peering.standalone
