"""Mutated prototxts: token, value and graph mutations of LeNet, AlexNet, a V1 LeNet, a train_val net and
a net that uses every supported layer type.

* token: a token of the text deleted, duplicated, swapped, replaced, or junk (braces, colons, NUL,
  bytes that are not UTF-8) inserted; the text cut short;
* value: a number set to a boundary value (``2147483648``, ``nan``, ``-1``...), a string to a colliding,
  reserved or long name, an enum to another identifier;
* graph (``graph.py``, on the parsed ``NetParameter``): layers duplicated, renamed, retyped, rewired,
  added; parameters and fillers set to boundary values; the input re-declared; the net rewritten as V1.
"""
from __future__ import annotations

import random
import re

from tools.fuzz import seeds, values
from tools.fuzz.case import Case, mutate_bytes
from tools.fuzz.graph import mutate_graph

_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|#[^\n]*|[A-Za-z_][\w.]*|'
                    r'-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|\S')
_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def generate(rng: random.Random) -> Case:
    name, text = _pick(rng)
    done = []
    kinds = rng.choices(["token", "value", "graph"], weights=[2, 3, 5], k=rng.choice([1, 1, 2, 3]))
    for kind in sorted(kinds, key=lambda k: k != "graph"):  # graph mutations need parsable text
        mutation = {"token": token_mutation, "value": value_mutation, "graph": mutate_graph}[kind]
        text, what = mutation(rng, text)
        done.append(what)
    data = text.encode("utf-8", errors="surrogateescape")
    if rng.random() < 0.05:
        data, kind = mutate_bytes(rng, data)
        done.append(kind)
    return Case("prototxt", f"{name}:" + "+".join(done), {"net.prototxt": data}, "net.prototxt")


def _pick(rng: random.Random) -> tuple[str, str]:
    name = rng.choices(["lenet", "sink", "lenet-v1", "train-val", "alexnet"], weights=[35, 35, 12, 13, 5])[0]
    text = {"lenet": seeds.lenet_prototxt, "sink": lambda: seeds.KITCHEN_SINK,
            "lenet-v1": lambda: seeds.lenet_v1()[1], "train-val": lambda: seeds.TRAIN_VAL,
            "alexnet": seeds.alexnet_prototxt}[name]()
    return name, text


# -- token and value mutations ---------------------------------------------------------------------

def token_mutation(rng: random.Random, text: str) -> tuple[str, str]:
    spans = [m.span() for m in _TOKEN.finditer(text)]
    if not spans:
        return text, "token-none"
    a, b = rng.choice(spans)
    kind = rng.choice(["delete", "duplicate", "swap", "replace", "junk", "cut"])
    if kind == "delete":
        return text[:a] + text[b:], "token-delete"
    if kind == "duplicate":
        return text[:b] + " " + text[a:b] + text[b:], "token-duplicate"
    if kind == "swap":
        c, d = rng.choice(spans)
        if c < a:
            (a, b), (c, d) = (c, d), (a, b)
        if c < b:
            return text, "token-swap-none"
        return text[:a] + text[c:d] + text[b:c] + text[a:b] + text[d:], "token-swap"
    if kind == "replace":
        c, d = rng.choice(spans)
        return text[:a] + text[c:d] + text[b:], "token-replace"
    if kind == "junk":
        junk = rng.choice(["{", "}", ":", "::", "\x00", "\udcff", "\\", '"', "'", "#", "<", "0x", "1e999"])
        return text[:a] + junk + text[a:], "token-junk"
    return text[:a], "token-cut"


def value_mutation(rng: random.Random, text: str) -> tuple[str, str]:
    kind = rng.choice(["number", "number", "string", "enum"])
    if kind == "number":
        spans = [m.span() for m in _NUMBER.finditer(text)]
        if spans:
            a, b = rng.choice(spans)
            v = values.int_value(rng) if rng.random() < 0.6 else values.float_value(rng)
            return text[:a] + _number_text(v) + text[b:], "value-number"
    if kind == "string":
        spans = [m.span() for m in re.finditer(r'"(?:[^"\\\n]|\\.)*"', text)]
        if spans:
            a, b = rng.choice(spans)
            return text[:a] + _quote(values.name_value(rng)) + text[b:], "value-string"
    spans = [m.span(1) for m in re.finditer(r":\s*([A-Z][A-Z_]+)\b", text)]
    if spans:
        a, b = rng.choice(spans)
        new = rng.choice(["MAX", "AVE", "STOCHASTIC", "SUM", "PROD", "WITHIN_CHANNEL", "TRAIN", "TEST",
                          "FAN_OUT", "AVERAGE", "CONVOLUTION", "NOPE", "true", "3"])
        return text[:a] + new + text[b:], "value-enum"
    return text, "value-none"


def _number_text(v) -> str:
    if isinstance(v, float):
        return {float("inf"): "inf", float("-inf"): "-inf"}.get(v, "nan" if v != v else repr(v))
    return str(v)


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'
