"""librdkafka's mock cluster, driven through ctypes on the librdkafka that confluent-kafka ships.

The mock cluster is a set of in-process Kafka brokers on loopback ports. confluent-kafka does not
expose its ``rd_kafka_t`` handle, so the cluster lives in a handle of its own, made here with
``rd_kafka_new``; the daemon under test (another process) connects to it over TCP like to any
broker. Error injection (``rd_kafka_mock_push_request_errors_array``) then makes the broker
answer the next requests of one kind with chosen errors.
"""

from __future__ import annotations

import ctypes
import importlib.util
from pathlib import Path

RD_KAFKA_PRODUCER = 0
#: Kafka protocol API keys.
API_PRODUCE = 0
API_INIT_PRODUCER_ID = 22
#: Kafka protocol error codes.
OUT_OF_ORDER_SEQUENCE_NUMBER = 45


def _library() -> ctypes.CDLL:
    spec = importlib.util.find_spec("confluent_kafka")
    assert spec is not None and spec.origin
    libs = sorted((Path(spec.origin).parent.parent / "confluent_kafka.libs").glob("librdkafka*"))
    if not libs:
        raise RuntimeError("confluent-kafka ships no librdkafka here (a system build?)")
    lib = ctypes.CDLL(str(libs[0]))
    vp, cp = ctypes.c_void_p, ctypes.c_char_p
    lib.rd_kafka_conf_new.restype = vp
    lib.rd_kafka_conf_new.argtypes = []
    lib.rd_kafka_conf_set.restype = ctypes.c_int
    lib.rd_kafka_conf_set.argtypes = [vp, cp, cp, cp, ctypes.c_size_t]
    lib.rd_kafka_new.restype = vp
    lib.rd_kafka_new.argtypes = [ctypes.c_int, vp, cp, ctypes.c_size_t]
    lib.rd_kafka_destroy.restype = None
    lib.rd_kafka_destroy.argtypes = [vp]
    lib.rd_kafka_mock_cluster_new.restype = vp
    lib.rd_kafka_mock_cluster_new.argtypes = [vp, ctypes.c_int]
    lib.rd_kafka_mock_cluster_destroy.restype = None
    lib.rd_kafka_mock_cluster_destroy.argtypes = [vp]
    lib.rd_kafka_mock_cluster_bootstraps.restype = cp
    lib.rd_kafka_mock_cluster_bootstraps.argtypes = [vp]
    lib.rd_kafka_mock_push_request_errors_array.restype = None
    lib.rd_kafka_mock_push_request_errors_array.argtypes = [
        vp, ctypes.c_int16, ctypes.c_size_t, ctypes.POINTER(ctypes.c_int)]
    return lib


class MockCluster:
    """A librdkafka mock cluster of ``brokers`` brokers, alive until ``close()``."""

    def __init__(self, brokers: int = 1) -> None:
        self._lib = _library()
        errstr = ctypes.create_string_buffer(512)
        conf = self._lib.rd_kafka_conf_new()
        # rd_kafka_new takes the conf over, also on failure? Only on success; keep it simple:
        # a producer handle with no brokers of its own, only there to own the mock cluster.
        self._rk = self._lib.rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, len(errstr))
        if not self._rk:
            raise RuntimeError(f"rd_kafka_new: {errstr.value.decode()}")
        self._mc = self._lib.rd_kafka_mock_cluster_new(self._rk, brokers)
        if not self._mc:
            self._lib.rd_kafka_destroy(self._rk)
            raise RuntimeError("rd_kafka_mock_cluster_new failed")
        self.bootstrap = self._lib.rd_kafka_mock_cluster_bootstraps(self._mc).decode()

    def push_request_errors(self, api_key: int, *errors: int) -> None:
        """The next ``len(errors)`` requests of ``api_key`` are answered with these errors."""
        arr = (ctypes.c_int * len(errors))(*errors)
        self._lib.rd_kafka_mock_push_request_errors_array(self._mc, api_key, len(errors), arr)

    def close(self) -> None:
        if self._mc:
            self._lib.rd_kafka_mock_cluster_destroy(self._mc)
            self._mc = None
        if self._rk:
            self._lib.rd_kafka_destroy(self._rk)
            self._rk = None
