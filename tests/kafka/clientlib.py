"""What kafka_python_client.py and confluent_client.py share: the records
they write, how they print results, and the bounds on every wait.

Output is JSON lines on stdout. Every scenario ends with one line
`{"scenario": NAME, "ok": true, ...}`; a failure prints
`{"scenario": NAME, "ok": false, "error": ...}` and exits 1. A watchdog ends
the process (exit 3, with such a line) when a scenario outlives its budget,
so no scenario can hang whatever the broker does.
"""

import json
import os
import sys
import threading
import time
import traceback

# Budget of one scenario, whatever it waits for.
SCENARIO_BUDGET_S = float(os.environ.get("KAFKA_TEST_BUDGET_S", "100"))
# Bound of one wait for records, an assignment or a delivery report.
WAIT_S = 30.0

_scenario = "?"
_lock = threading.Lock()


def emit(**kw):
    """Prints one JSON line."""
    line = json.dumps(kw, sort_keys=True)
    with _lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def hx(b):
    """Bytes as hex; None stays None (a null key or value)."""
    return None if b is None else bytes(b).hex()


def headers_json(headers):
    return [[k, hx(v)] for k, v in (headers or [])]


# ------------------------------------------------------------------ records


def key(i):
    # Binary keys: a NUL and a 0xff byte must survive.
    return b"key-%04d\x00\xff" % i


def value(i, tag=b""):
    # Binary payload of varying length; record 7 has a null value.
    if i == 7:
        return None
    return tag + b"value-%d|" % i + bytes((i * 7 + j) % 256 for j in range(i % 61))


def headers(i):
    # Record 3 (and every tenth after it) has no headers; the others two,
    # one with binary bytes, in this order.
    if i % 10 == 3:
        return []
    return [("trace", b"t-%d" % i), ("bin", bytes([i % 256, 0, 255]))]


def record(i, base_ts, tag=b""):
    return {
        "i": i,
        "key": key(i),
        "value": value(i, tag),
        "headers": headers(i),
        "ts": base_ts + i * 10,
    }


def record_json(r):
    return {
        "i": r["i"],
        "k": hx(r["key"]),
        "v": hx(r["value"]),
        "h": headers_json(r["headers"]),
        "ts": r["ts"],
    }


def compare(expected, got_key, got_value, got_headers, got_ts, where):
    """Checks one consumed record against the one produced, byte for byte."""
    check(got_key == expected["key"], f"{where}: key {got_key!r} != {expected['key']!r}")
    check(
        got_value == expected["value"],
        f"{where}: value {got_value!r} != {expected['value']!r}",
    )
    gh = [(k, bytes(v) if v is not None else None) for k, v in (got_headers or [])]
    check(gh == expected["headers"], f"{where}: headers {gh!r} != {expected['headers']!r}")
    check(got_ts == expected["ts"], f"{where}: timestamp {got_ts} != {expected['ts']}")


def index_of(v):
    """The record index written in a value (`...value-I|...`), for records
    whose value is not null."""
    s = bytes(v)
    at = s.index(b"value-") + len(b"value-")
    return int(s[at : s.index(b"|", at)])


def seq_value(i, tag):
    return b"%s-%08d" % (tag.encode(), i)


def seq_of(v, tag):
    s = bytes(v).decode()
    check(s.startswith(tag + "-"), f"unexpected value {s!r}")
    return int(s[len(tag) + 1 :])


def wait_until(what, cond, timeout=WAIT_S, step=None):
    """Polls `cond` (calling `step` between polls) until it is true."""
    deadline = time.time() + timeout
    while True:
        if cond():
            return
        if time.time() > deadline:
            raise Failure(f"timed out after {timeout:.0f} s waiting for {what}")
        if step:
            step()
        else:
            time.sleep(0.05)


# ------------------------------------------------------------------ running


def _watchdog():
    time.sleep(SCENARIO_BUDGET_S)
    emit(scenario=_scenario, ok=False, error=f"watchdog: scenario ran over {SCENARIO_BUDGET_S} s")
    os._exit(3)


def main(scenarios, usage):
    """`PROG BOOTSTRAP SCENARIO NAME [ARGS...]`: runs one scenario."""
    global _scenario
    if len(sys.argv) < 4 or sys.argv[2] not in scenarios:
        sys.stderr.write(usage)
        sys.exit(2)
    boot, _scenario, name = sys.argv[1:4]
    threading.Thread(target=_watchdog, daemon=True).start()
    started = time.time()
    try:
        summary = scenarios[_scenario](boot, name, *sys.argv[4:]) or {}
    except Exception as e:  # noqa: BLE001 - every failure is reported the same way
        traceback.print_exc()
        emit(scenario=_scenario, ok=False, error=f"{type(e).__name__}: {e}")
        sys.stdout.flush()
        os._exit(1)
    emit(scenario=_scenario, ok=True, secs=round(time.time() - started, 2), **summary)
    sys.stdout.flush()
    # Skip interpreter teardown: a client's background threads may linger.
    os._exit(0)
