"""Runs the encoder benchmark end to end and writes ``bench-results/encoder.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loadtests.bench.encoder import (
    ceilings,
    free_port,
    make_inputs,
    overload,
    padding_speedup,
    served,
    start_worker,
)
from loadtests.bench.load import machine
from service.core.config import Settings


def run_encoder_bench(
    settings: Settings,
    bundle: Path,
    *,
    seconds: float,
    clients: int,
    bulk_clients: int,
    transports: tuple[str, ...],
) -> dict[str, Any]:
    from service.clients.inprocess import InProcessEmbeddingClient
    from service.core.bundle.manifest import load_bundle
    from service.encoder.engine import EncoderEngine

    engine = EncoderEngine(load_bundle(bundle), settings)
    engine.warmup()
    inputs = make_inputs()
    report: dict[str, Any] = {
        "bundle": engine.bundle.manifest.ref,
        "provider": engine.provider,
        "machine": machine(),
        "settings": settings.encoder.model_dump(mode="json", exclude={"endpoints"}),
        "clients": clients,
        "bulk_clients": bulk_clients,
        "seconds": seconds,
    }
    ceiling = ceilings(engine, inputs, seconds)
    report["ceiling"] = ceiling
    report["padding"] = padding_speedup(engine, inputs, seconds)
    towers: dict[str, Any] = {t: {} for t in ceiling}
    if "inprocess" in transports:
        client = InProcessEmbeddingClient(engine)
        try:
            got = served(
                client, inputs, clients=clients, bulk_clients=bulk_clients, seconds=seconds
            )
        finally:
            client.close()
        _merge(towers, got, ceiling, "inprocess")
        report["overload"] = overload(engine, inputs, seconds)
    if "grpc" in transports:
        from service.clients.grpc import GrpcEmbeddingClient

        port = free_port()
        worker = start_worker(bundle, settings, port)
        grpc_client = GrpcEmbeddingClient([f"127.0.0.1:{port}"], settings.encoder)
        try:
            health = grpc_client.wait_ready(180)
            if not health.ready:
                raise RuntimeError(f"the worker did not become ready: {health.reason}")
            got = served(
                grpc_client,
                inputs,
                clients=clients,
                bulk_clients=bulk_clients,
                seconds=seconds,
                endpoint=f"127.0.0.1:{port}",
            )
        finally:
            grpc_client.close()
            worker.terminate()
            worker.wait(30)
        _merge(towers, got, ceiling, "grpc")
    report["towers"] = towers
    return report


def _merge(towers: dict[str, Any], got: dict[str, Any], ceiling: dict[str, Any], name: str) -> None:
    for tower, figures in got.items():
        top = ceiling[tower]["items_per_s"]
        entry = {"ceiling_items_per_s": top, **figures}
        entry["ratio"] = figures["served_items_per_s"] / top
        if tower == "image":
            pipeline = ceiling[tower]["decode_and_infer_items_per_s"]
            entry["ratio_to_decode_and_infer"] = figures["served_items_per_s"] / pipeline
        towers[tower][name] = entry
