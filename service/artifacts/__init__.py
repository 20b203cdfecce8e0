"""Uploaded artifacts: the content-addressed store (``store``) and the checks an upload
passes before it is stored (``validate``)."""

from api_schemas.enums import BUILTIN_DATASETS
from service.artifacts.store import KNOWN_SUFFIXES, ArtifactStore, known_suffix
from service.artifacts.validate import (
    ZOO_PREFIX,
    ArtifactInfo,
    ArtifactRejected,
    CheckpointInfo,
    DatasetInfo,
    check_zoo_config,
    discard_directory,
    parse_config,
    rejecting,
    resolve_zoo_config,
    validate_checkpoint,
    validate_dataset,
    validate_hf_archive,
    zoo_reference,
)

__all__ = [
    "BUILTIN_DATASETS",
    "KNOWN_SUFFIXES",
    "ZOO_PREFIX",
    "ArtifactInfo",
    "ArtifactRejected",
    "ArtifactStore",
    "CheckpointInfo",
    "DatasetInfo",
    "check_zoo_config",
    "discard_directory",
    "known_suffix",
    "parse_config",
    "rejecting",
    "resolve_zoo_config",
    "validate_checkpoint",
    "validate_dataset",
    "validate_hf_archive",
    "zoo_reference",
]
