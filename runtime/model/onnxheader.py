"""What an ONNX file declares about itself, read without the ``onnx`` package (the runtime must
not depend on it): IR version, operator-set versions, and tensors stored outside the file.

An ONNX file is a protobuf ``ModelProto``. Only a handful of fields matter here, so this walks
the wire format directly: field numbers from onnx/onnx.proto (ModelProto: ir_version = 1,
graph = 7, opset_import = 8; OperatorSetIdProto: domain = 1, version = 2; GraphProto:
initializer = 5; TensorProto: name = 8, external_data = 13, data_location = 14).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


class HeaderError(ValueError):
    """The bytes are not a readable protobuf message."""


@dataclass(frozen=True)
class OnnxHeader:
    ir_version: int
    opsets: dict[str, int] = field(default_factory=dict)  # "" is the default domain, ai.onnx
    external_tensors: tuple[str, ...] = ()

    def describe(self) -> str:
        """E.g. "IR version 10, opset 18"."""
        opset = self.opsets.get("", self.opsets.get("ai.onnx"))
        return f"IR version {self.ir_version}" + (f", opset {opset}" if opset is not None else "")


def read_header(data: bytes) -> OnnxHeader:
    """Parse the few ``ModelProto`` fields btxrd checks before handing the file to onnxruntime."""
    ir_version, opsets, external = 0, {}, []  # type: tuple[int, dict[str, int], list[str]]
    # Views, not copies: the graph field is nearly the whole file (megabytes of weights).
    for number, value in _fields(memoryview(data)):
        if number == 1 and isinstance(value, int):
            ir_version = value
        elif number == 8 and isinstance(value, memoryview):
            domain, version = "", 0
            for inner, item in _fields(value):
                if inner == 1 and isinstance(item, memoryview):
                    domain = _text(item)
                elif inner == 2 and isinstance(item, int):
                    version = item
            opsets[domain] = version
        elif number == 7 and isinstance(value, memoryview):
            external.extend(_external_initialisers(value))
    return OnnxHeader(ir_version, opsets, tuple(external))


def _external_initialisers(graph: memoryview) -> Iterator[str]:
    for number, value in _fields(graph):
        if number != 5 or not isinstance(value, memoryview):
            continue
        name, outside = "", False
        for inner, item in _fields(value):
            if inner == 8 and isinstance(item, memoryview):
                name = _text(item)
            elif inner == 13 or (inner == 14 and item == _EXTERNAL):
                outside = True
        if outside:
            yield name


def _text(view: memoryview) -> str:
    return bytes(view).decode("utf-8", "replace")


def _fields(data: memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """(field number, value) of one message level: ints for varints, views of the bytes for
    the rest."""
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(data, pos)
            yield number, value
        elif wire == _LEN:
            length, pos = _varint(data, pos)
            if pos + length > end:
                raise HeaderError("length-delimited field runs past the end")
            yield number, data[pos : pos + length]
            pos += length
        elif wire in (_I64, _I32):
            size = 8 if wire == _I64 else 4
            yield number, data[pos : pos + size]
            pos += size
        else:
            raise HeaderError(f"unsupported protobuf wire type {wire}")


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(data) or shift > 63:
            raise HeaderError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
