"""The ONNX header reader the runtime uses instead of the onnx package."""

from __future__ import annotations

import contextlib

from hypothesis import given
from hypothesis import strategies as st

from btxrd.runtime.model.onnxheader import HeaderError, read_header


def test_reads_ir_version_and_opsets_of_a_real_model(tiny_model_proto):
    header = read_header(tiny_model_proto.SerializeToString())
    assert header.ir_version == tiny_model_proto.ir_version
    assert header.opsets == {o.domain: o.version for o in tiny_model_proto.opset_import}
    assert header.external_tensors == ()


@given(st.binary(max_size=256))
def test_any_bytes_parse_or_raise_header_error(data):
    with contextlib.suppress(HeaderError):
        read_header(data)
