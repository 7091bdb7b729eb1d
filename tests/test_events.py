"""Events: the one console form of events (ConsoleSink) that the CLI, the launcher and notebooks print."""

from __future__ import annotations

import io

from workbench.events import ConsoleSink, Event, duration


def _lines(events, **kw):
    out = []
    sink = ConsoleSink(write=out.append, **kw)
    for kind, data in events:
        sink(Event(kind, data))
    return out


GEN = {"generation": 3, "best": 12.3456, "median": 14.0, "evaluated": 16, "stopped_early": 5, "tokens_total": 123456}


def test_search_training_and_stage_lines_nest_under_a_progressive_stage():
    lines = _lines([("search.generation", GEN), ("progressive.start", {"stage": "01-search"}),
                    ("search.generation", GEN), ("train.step", {"step": 1, "loss": 5.0, "lr": 1e-3}),
                    ("train.step", {"step": 2, "loss": 4.9}), ("train.step", {"step": 20, "loss": 4.0}),
                    ("progressive.stage", {"stage": "01-search", "seconds": 42.0}), ("search.warning", {"x": 1}),
                    ("something.else", {})], train_every=20)
    gen = "generation   3: best PPL 12.3456, median 14.0000, 16 evaluated (5 stopped early), 123,456 token-forwards"
    assert lines == [gen, "stage 01-search ...", "    " + gen, "    step 1: loss 5.0000, lr 1.00e-03",
                     "    step 20: loss 4.0000", "[   42s] stage 01-search done", "    warning: {'x': 1}"]


def test_perplexity_progress_says_which_forward_and_the_time_left():
    layer = {"label": "yarn", "length": 1024, "index": 0, "of": 2, "layers": 4}
    doc = {"label": "yarn", "length": 1024, "index": 0, "of": 2, "ppl": 3.21, "document": "hamlet"}
    lines = _lines([("ppl.layer", {**layer, "layer": k}) for k in (1, 2, 3, 4)] + [("ppl.document", doc)],
                   every=0.5, forwards=2)
    assert len(lines) == 2  # layer 2 of 4 (every half forward; the last layer is the document line)
    assert "yarn @   1024 tokens: document 1/2, layer 2/4; forward 1/2, about" in lines[0]
    assert "document 1/2 PPL 3.21 (hamlet); 1 of 2 forwards done, about" in lines[1]
    last = _lines([("ppl.document", doc), ("ppl.document", {**doc, "index": 1})], forwards=2)[1]
    assert last.endswith("document 2/2 PPL 3.21 (hamlet); 2 of 2 forwards done")


def test_an_engine_reading_in_token_batches_prints_a_line_each_quarter_of_the_window():
    batch = {"label": "yarn · llama.cpp", "length": 4096, "index": 0, "of": 1, "total": 4095}
    lines = _lines([("ppl.batch", {**batch, "tokens": t}) for t in range(512, 4096, 512)] +
                   [("ppl.batch", {**batch, "tokens": 4095})], forwards=2)
    assert len(lines) == 3  # at 1,024, 2,048 and 3,072 tokens: a quarter each; the whole window is the document line
    assert "document 1/1, 1,024 of 4,095 tokens read; forward 1/2, about" in lines[0]
    assert "3,072 of 4,095 tokens read; forward 1/2, about" in lines[2]


def test_a_stream_sink_prints_lines_and_durations_read_naturally():
    stream = io.StringIO()
    ConsoleSink(stream)(Event("train.step", {"step": 10, "loss": 1.0}))
    assert stream.getvalue() == "step 10: loss 1.0000\n"
    assert duration(42.4) == "42 s" and duration(125) == "2 min 05 s" and duration(26925) == "7 h 28 min"


def test_search_warnings_and_the_n_hat_stage_read_as_sentences():
    lines = _lines([("search.warning", {"message": "3 documents are shorter than the target"}),
                    ("search.n_hat", {"best_n_hat": 16, "best": 12.3456})])
    assert lines == ["warning: 3 documents are shorter than the target", "n_hat stage: best n_hat 16, fitness 12.3456"]


def test_search_lines_say_where_a_candidate_got_and_the_time_left(monkeypatch):
    from workbench import events

    clock = iter([0.0, 0.0, 100.0, 200.0, 300.0, 300.0, 300.0])
    monkeypatch.setattr(events.time, "time", lambda: next(clock))
    sink = ConsoleSink()
    got = [sink.format(Event("search.start", {"config": {"generations": 4}}))]
    for g in (0, 1, 2):
        got.append(sink.format(Event("search.generation", {**GEN, "generation": g})))
    got.append(sink.format(Event("search.candidate", {"stage": "generation", "generation": 3, "to": 12288, "done": 2,
                                                      "of": 8, "loss": 3.2465, "complete": False, "raced": False,
                                                      "seconds": 65.0, "left": 195.0})))
    got.append(sink.format(Event("search.rung", {"rung": 0, "tokens": 12288, "kept": 4})))
    assert got[0] is None and got[1].startswith("generation   0/4: best PPL") and "left" not in got[1]
    assert got[3].endswith("; about 3 min 20 s left")  # two generations left at 100 s each
    assert "gen 3: candidate 2/8 read to 12288 tokens, loss 3.2465 (1 min 05 s), about 3 min 15 s left" in got[4]
    assert got[5].endswith("rung 1 (12288 tokens): 4 candidates go on")


def test_the_time_left_of_a_resumed_search_comes_from_its_evaluations_own_seconds():
    sink = ConsoleSink()  # replayed generations arrive at once: their journaled seconds give the pace
    sink.format(Event("search.start", {"config": {"generations": 5}}))
    got = [sink.format(Event("search.generation", {**GEN, "generation": g, "seconds": s}))
           for g, s in ((0, 800.0), (1, 100.0), (2, 300.0))]
    assert "left" not in got[0]  # the first generation reads the whole population: no pace yet
    assert got[1].endswith("; about 6 min 40 s left") and got[2].endswith("; about 10 min 00 s left")
    none_yet = ConsoleSink()
    none_yet.format(Event("search.start", {"config": {"generations": 5}}))
    assert "left" not in none_yet.format(Event("search.generation", {**GEN, "generation": 1, "seconds": 0.0}))
