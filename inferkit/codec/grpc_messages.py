"""The other RPCs of the v2 gRPC protocol: their request messages, and their replies as plain dicts.

Owns: building the request of every RPC but ``ModelInfer`` / ``ModelStreamInfer`` (model readiness, metadata,
config, statistics, the model repository and system shared memory; arguments checked), and turning their replies
into the dicts and lists the REST client returns for the same call.
Must not import: requests, urllib3, aiohttp, grpc.

Dict shape of metadata/config/statistics replies (:func:`message_to_dict`): ``MessageToDict`` with the .proto
field names (snake_case), every field present including those at their default value (as Triton's REST JSON
does), enums as their names, bytes as base64 text, and 64-bit integers as Python ``int`` (the protobuf JSON
mapping would give strings; REST servers give numbers, and the two clients must return the same shape).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor

from inferkit.codec.grpc_params import encode_repository_parameters
from inferkit.codec.grpc_wire import pb
from inferkit.codec.server_settings import (
    log_settings_wire,
    read_log_settings,
    read_trace_settings,
    trace_settings_wire,
)
from inferkit.codec.tensors import check_shm_registration

__all__ = [
    "model_ready_request",
    "model_metadata_request",
    "model_config_request",
    "model_statistics_request",
    "repository_index_request",
    "repository_load_request",
    "repository_unload_request",
    "shm_status_request",
    "shm_register_request",
    "shm_unregister_request",
    "trace_setting_request",
    "trace_settings_to_dict",
    "log_settings_request",
    "log_settings_to_dict",
    "message_to_dict",
    "server_metadata_to_dict",
    "model_metadata_to_dict",
    "model_config_to_dict",
    "model_statistics_to_dict",
    "repository_index_to_list",
    "shm_status_to_list",
]


# -- requests ----------------------------------------------------------------------------------------------------------


def model_ready_request(model_name: str, model_version: str | None = None) -> Any:
    """``ModelReadyRequest``."""
    return pb.ModelReadyRequest(name=model_name, version=model_version or "")


def model_metadata_request(model_name: str, model_version: str | None = None) -> Any:
    """``ModelMetadataRequest``."""
    return pb.ModelMetadataRequest(name=model_name, version=model_version or "")


def model_config_request(model_name: str, model_version: str | None = None) -> Any:
    """``ModelConfigRequest``."""
    return pb.ModelConfigRequest(name=model_name, version=model_version or "")


def model_statistics_request(model_name: str | None = None, model_version: str | None = None) -> Any:
    """``ModelStatisticsRequest`` (no name: every model)."""
    return pb.ModelStatisticsRequest(name=model_name or "", version=model_version or "")


def repository_index_request(ready: bool = False) -> Any:
    """``RepositoryIndexRequest``."""
    return pb.RepositoryIndexRequest(ready=ready)


def repository_load_request(model_name: str, parameters: Mapping[str, Any] | None = None) -> Any:
    """``RepositoryModelLoadRequest`` (parameters: bool/int/str/bytes, e.g. ``{"config": json_text}``)."""
    msg = pb.RepositoryModelLoadRequest(model_name=model_name)
    encode_repository_parameters(msg.parameters, parameters, f"load of model {model_name!r}")
    return msg


def repository_unload_request(model_name: str, parameters: Mapping[str, Any] | None = None) -> Any:
    """``RepositoryModelUnloadRequest`` (e.g. ``{"unload_dependents": True}``)."""
    msg = pb.RepositoryModelUnloadRequest(model_name=model_name)
    encode_repository_parameters(msg.parameters, parameters, f"unload of model {model_name!r}")
    return msg


def shm_status_request(region_name: str | None = None) -> Any:
    """``SystemSharedMemoryStatusRequest`` (no name: every region)."""
    return pb.SystemSharedMemoryStatusRequest(name=region_name or "")


def shm_register_request(name: str, key: str, byte_size: int, offset: int = 0) -> Any:
    """``SystemSharedMemoryRegisterRequest`` (arguments checked: EncodeError naming the region)."""
    name, key, byte_size, offset = check_shm_registration(name, key, byte_size, offset)
    return pb.SystemSharedMemoryRegisterRequest(name=name, key=key, offset=offset, byte_size=byte_size)


def shm_unregister_request(name: str | None = None) -> Any:
    """``SystemSharedMemoryUnregisterRequest`` (no name: every region)."""
    return pb.SystemSharedMemoryUnregisterRequest(name=name or "")


def trace_setting_request(model_name: str | None, settings: Mapping[str, Any] | None) -> Any:
    """``TraceSettingRequest``: no settings reads them; a setting of None clears the model's own value."""
    msg = pb.TraceSettingRequest(model_name=model_name or "")
    for key, value in trace_settings_wire(settings, f"trace settings of {model_name or 'server'}").items():
        entry = msg.settings[key]  # an empty SettingValue clears
        if value is not None:
            entry.value.extend([value] if isinstance(value, str) else value)
    return msg


def trace_settings_to_dict(message: Any) -> dict[str, Any]:
    """``TraceSettingResponse`` -> the dict of :func:`inferkit.codec.server_settings.read_trace_settings`."""
    return read_trace_settings({key: list(entry.value) for key, entry in message.settings.items()})


def log_settings_request(settings: Mapping[str, Any] | None) -> Any:
    """``LogSettingsRequest``: bool -> ``bool_param``, int -> ``uint32_param``, str -> ``string_param``."""
    msg = pb.LogSettingsRequest()
    for key, value in log_settings_wire(settings or {}, "log settings").items():
        if isinstance(value, bool):
            msg.settings[key].bool_param = value
        elif isinstance(value, int):
            msg.settings[key].uint32_param = value
        else:
            msg.settings[key].string_param = value
    return msg


def log_settings_to_dict(message: Any) -> dict[str, Any]:
    """``LogSettingsResponse`` -> ``{"log_info": True, "log_verbose_level": 0, "log_format": "default", ...}``."""
    raw = {}
    for key, entry in message.settings.items():
        choice = entry.WhichOneof("parameter_choice")
        raw[key] = getattr(entry, choice) if choice else None
    return read_log_settings(raw)


# -- replies -> dicts --------------------------------------------------------------------------------------------------


def shm_status_to_list(message: Any) -> list[dict[str, Any]]:
    """``SystemSharedMemoryStatusResponse`` -> ``[{"name", "key", "offset", "byte_size"}, ...]`` by name (as REST)."""
    return [
        {"name": r.name or name, "key": r.key, "offset": int(r.offset), "byte_size": int(r.byte_size)}
        for name, r in sorted(message.regions.items())
    ]


_INT64_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)


def _to_dict_kwargs() -> dict[str, Any]:
    params = json_format.MessageToDict.__code__.co_varnames
    if "always_print_fields_with_no_presence" in params:
        return {"always_print_fields_with_no_presence": True}
    return {"including_default_value_fields": True}  # protobuf < 5


_DICT_KWARGS = _to_dict_kwargs()


def _fix_int64(value: Any, descriptor: Any) -> Any:
    """Turn the JSON mapping's int64-as-string back into ints, guided by the descriptor."""
    if not isinstance(value, dict):
        return value
    for field in descriptor.fields:
        key = field.name
        if key not in value:
            continue
        item = value[key]
        if field.type in _INT64_TYPES:
            if isinstance(item, list):
                value[key] = [int(x) for x in item]
            else:
                value[key] = int(item)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            sub = field.message_type
            if sub.GetOptions().map_entry:
                value_field = sub.fields_by_name["value"]
                if value_field.type in _INT64_TYPES:
                    value[key] = {k: int(v) for k, v in item.items()}
                elif value_field.type == FieldDescriptor.TYPE_MESSAGE:
                    for v in item.values():
                        _fix_int64(v, value_field.message_type)
            elif isinstance(item, list):
                for v in item:
                    _fix_int64(v, sub)
            else:
                _fix_int64(item, sub)
    return value


def message_to_dict(message: Any) -> dict[str, Any]:
    """A reply message as a plain dict (shape documented in the module docstring)."""
    raw = json_format.MessageToDict(message, preserving_proto_field_name=True, **_DICT_KWARGS)
    return _fix_int64(raw, message.DESCRIPTOR)  # type: ignore[no-any-return]


def server_metadata_to_dict(message: Any) -> dict[str, Any]:
    """``ServerMetadataResponse`` -> ``{"name", "version", "extensions"}`` (as ``GET /v2``)."""
    return {"name": message.name, "version": message.version, "extensions": list(message.extensions)}


def model_metadata_to_dict(message: Any) -> dict[str, Any]:
    """``ModelMetadataResponse`` -> ``{"name", "versions", "platform", "inputs", "outputs"}`` (as REST)."""

    def tensors(entries: Iterable[Any]) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in entries]

    return {
        "name": message.name,
        "versions": list(message.versions),
        "platform": message.platform,
        "inputs": tensors(message.inputs),
        "outputs": tensors(message.outputs),
    }


def model_config_to_dict(message: Any) -> dict[str, Any]:
    """``ModelConfigResponse`` (or a ``ModelConfig``) -> the config dict, as ``GET .../config`` returns it."""
    config = message.config if message.DESCRIPTOR.name == "ModelConfigResponse" else message
    return message_to_dict(config)


def model_statistics_to_dict(message: Any) -> dict[str, Any]:
    """``ModelStatisticsResponse`` -> ``{"model_stats": [...]}`` (as ``GET .../stats``)."""
    return message_to_dict(message)


def repository_index_to_list(message: Any) -> list[dict[str, Any]]:
    """``RepositoryIndexResponse`` -> ``[{"name", "version", "state", "reason"}, ...]`` (as REST)."""
    out = []
    for m in message.models:
        entry = {"name": m.name}
        for key in ("version", "state", "reason"):
            value = getattr(m, key)
            if value:
                entry[key] = value
        out.append(entry)
    return out
