"""Write and find model-store entries (BentoML model store, under ``$BENTOML_HOME``)."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import bentoml
from bentoml.exceptions import NotFound

from models.catalogue import CatalogueModel
from runners.backends.downloads import DownloadPlan, FetchesUpstream, fetching_upstream, upstream_plan
from runners.contract import WeightSource

WEIGHTS_LABEL = "weights"
VARIANT_LABEL = "variant"


class ModelNotImported(LookupError):
    """The selected model has no entry in the model store."""


def import_command(model: CatalogueModel) -> str:
    return f"python -m models import {model.id}"


def import_model(model: CatalogueModel, source: WeightSource, openvino: bool = False) -> bentoml.Model:
    """Create a new store entry for ``model`` holding every file it needs at run time;
    ``openvino`` adds its encoders converted to OpenVINO IR (:mod:`runners.backends.openvino_export`)."""
    adapter = model.adapter
    labels = {
        "family": model.family.lower(),
        WEIGHTS_LABEL: "random" if source.kind == "random" else "pretrained",
        VARIANT_LABEL: "tiny" if source.tiny else "full",
        "source": source.kind,
    }
    metadata = {
        "id": model.id,
        "adapter": adapter.name,
        "upstream": dict(model.upstream),
        "dimension": model.dimension,
        "image_size": model.image_size,
        "context_length": model.context_length,
        "modalities": list(model.modalities),
    }
    metadata = {key: value for key, value in metadata.items() if value is not None}  # BentoML refuses None
    with bentoml.models.create(model.store_name, labels=labels, metadata=metadata) as entry:
        with fetching_upstream(f"the files of {model.id}") if source.kind == "upstream" else nullcontext():
            metadata.update(adapter.write_entry(model, Path(entry.path), source))
        if openvino:
            from runners.backends.openvino_export import IR_DIR, convert_entry

            convert_entry(adapter, Path(entry.path), Path(entry.path) / IR_DIR)
            metadata["openvino_ir"] = IR_DIR
        entry.info.metadata.update(metadata)
    return bentoml.models.get(entry.tag)


def download_plans(model: CatalogueModel) -> list[DownloadPlan]:
    """What importing ``model``'s upstream weights will download, per Hub repository; none
    where its family does not say or the Hub gives no listing (the download then says why)."""
    adapter = model.adapter
    if not isinstance(adapter, FetchesUpstream):
        return []
    return [plan for wanted in adapter.upstream_files(model) if (plan := upstream_plan(wanted)) is not None]


def store_tag(model: CatalogueModel) -> str:
    """The tag that serving resolves: the newest entry of the model."""
    return f"{model.store_name}:latest"


def find_entry(model: CatalogueModel) -> bentoml.Model:
    """The newest store entry of ``model``, or :class:`ModelNotImported` naming the fix."""
    try:
        return bentoml.models.get(store_tag(model))
    except NotFound:
        raise ModelNotImported(
            f"Model {model.id} is not in the BentoML model store "
            f"({bentoml.__name__} home: {_store_home()}). Import it first: "
            f"{import_command(model)}  (or --from-dir DIR for already-downloaded weights)"
        ) from None


def _store_home() -> str:
    from bentoml._internal.configuration.containers import BentoMLContainer

    return str(BentoMLContainer.bentoml_home.get())
