"""Checks that keep untrusted model files from running code or reading outside their directory.

Pickled weights are refused by `bertpress.models` (torch's weights-only loader); this module
holds the ONNX side: an ONNX file may name "external data" files for its tensors, and a
crafted file can point those at any path on the machine (`../../etc/passwd`, `/root/.ssh/...`).
We refuse every external-data location that is absolute or resolves outside the model's own
directory before any runtime opens the file.
"""

from __future__ import annotations

from pathlib import Path

from bertpress.errors import ArtifactError, UnsafeInputError


def check_onnx_external_data(file: str | Path) -> list[str]:
    """Return the external-data file names of an ONNX model, refusing unsafe locations."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors

    file = Path(file)
    try:
        model = onnx.load(str(file), load_external_data=False)
    except Exception as exc:
        raise ArtifactError(
            f"{file}: not a readable ONNX model ({type(exc).__name__}); re-export it"
        ) from None
    base = file.parent.resolve()
    locations = []
    for tensor in _get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = ExternalDataInfo(tensor).location
        target = (base / location).resolve()
        if Path(location).is_absolute() or not target.is_relative_to(base):
            raise UnsafeInputError(
                f"{file}: tensor {tensor.name!r} reads external data from {location!r}, outside the "
                "model's directory; refused (re-export the model with its data inside its directory)"
            )
        locations.append(location)
    return sorted(set(locations))
