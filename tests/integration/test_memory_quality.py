"""Ranking quality on a labelled set (``tests/data/memory_quality.json``): past tasks a team
finished, and queries that ask for one of them in other words or by an exact error string.
Top-1 and top-5 accuracy of hybrid, keyword-only and vector-only search, printed, on both
stores; hybrid must not be worse than either on either measure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from podium.memory import open_embedder
from podium.models import Outcome, TaskSpec, TaskState
from podium.service import Podium
from podium.store import Finish

DATA = json.loads((Path(__file__).parent.parent / "data" / "memory_quality.json").read_text())
MODES = ("hybrid", "keyword", "vector")


@pytest.fixture(scope="module")
def embedder():
    e = open_embedder("minilm")
    e.load()
    yield e
    e.close()


def test_hybrid_ranking_is_not_worse_than_keywords_or_vectors_alone(any_store_url, embedder,
                                                                    request):
    p = Podium.open(any_store_url)
    p.use_memory(None, embedder)
    try:
        s = p.store
        s.register_agent("a1", [], "echo", "host", 1, 30.0, {})
        label_of = {}
        for item in DATA["tasks"]:
            t = s.add_tasks([TaskSpec(item["prompt"])])[0]
            claimed = s.claim("a1", [], 30.0)
            s.finish("a1", Finish(t.id, claimed.attempts, Outcome(
                TaskState.COMPLETED, output=item["output"].encode(), exit_code=0)))
            label_of[t.id] = item["label"]
        queries = DATA["queries"]
        assert len(DATA["tasks"]) >= 30 and len(queries) >= 40
        scores = {}
        for mode in MODES:
            top1 = top5 = 0
            for q in queries:
                hits = p.memory_search(q["query"], k=5, kind="task", mode=mode)
                labels = [label_of[h.memory.task_id] for h in hits]
                top1 += labels[:1] == [q["expect"]]
                top5 += q["expect"] in labels
            scores[mode] = (top1, top5)
        kind = request.node.callspec.params["any_store_url"]
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print(f"\nmemory ranking on {len(queries)} queries over {len(label_of)} tasks "
                  f"({kind}):")
            for mode, (top1, top5) in scores.items():
                print(f"  {mode:8s} top-1 {top1:2d}/{len(queries)} ({top1 / len(queries):.0%})"
                      f"  top-5 {top5:2d}/{len(queries)} ({top5 / len(queries):.0%})")
        for i in (0, 1):
            assert scores["hybrid"][i] >= scores["keyword"][i], scores
            assert scores["hybrid"][i] >= scores["vector"][i], scores
        assert scores["hybrid"][1] >= 0.9 * len(queries), scores
    finally:
        p.close()
