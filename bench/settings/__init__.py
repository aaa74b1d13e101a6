"""Every setting of a run, and the one way in and out for them.

`profiles` holds the settings as dataclasses (the profiles, each field's range rule), `load`
merges and checks them (profile -> `--config` -> options -> `--set`) and writes config.yaml,
`versions` upgrades a config.yaml of any older format, `saved` reads a run folder's settings
back, and `device` resolves them for the device a tool runs on.
"""
from .load import (
    build,
    build_from,
    checked_overrides,
    comparable,
    first_difference,
    one_line,
    read_yaml,
    to_dict,
    to_yaml,
    validate,
)
from .profiles import (
    PROFILES,
    BackboneAudit,
    DataSource,
    DetectorConfig,
    MeasureConfig,
    Profile,
    RunConfig,
    SyntheticConfig,
    TrainConfig,
    get_profile,
    rule,
)
from .saved import SavedRun, load_run_config
from .versions import SCHEMA_VERSION, VERSION_KEY, checked_version, upgrade, version_of

__all__ = [
    "PROFILES", "SCHEMA_VERSION", "VERSION_KEY", "BackboneAudit", "DataSource", "DetectorConfig", "MeasureConfig", "Profile",
    "RunConfig", "SavedRun", "SyntheticConfig", "TrainConfig", "build", "build_from", "checked_overrides", "checked_version",
    "comparable", "first_difference", "get_profile", "load_run_config", "one_line", "read_yaml", "rule", "to_dict",
    "to_yaml", "upgrade", "validate", "version_of",
]
