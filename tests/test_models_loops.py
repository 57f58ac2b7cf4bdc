"""Loop-cut pairs: where a runaway answer starts to loop, and the answer cut there (models/loops.py)."""

from bbjtune.models.loops import loop_cut

INTRO = 'Bind each parameter in turn:\n\n```bbj\nsqlconn! = BBjAPI().getJDBCConnection("CDStore")\n'


def test_a_block_whose_numbers_count_up_is_cut_after_its_first_copy_and_the_fence_is_closed():
    runaway = INTRO + "".join(f"sqlbind sqlconn!,{i}\nprint {i}\n" for i in range(1, 40)) + "sqlbind sql"
    assert loop_cut(runaway) == INTRO + "sqlbind sqlconn!,1\nprint 1\n```"


def test_a_sentence_said_over_and_over_is_cut_at_the_end_of_its_first_copy():
    code = '```bbj\nif x then print "yes"\n```\n\n'
    sentence = "The `IF` is a test, so the `FI` line never executes. "
    runaway = code + "Here the loop ends. " + sentence * 6 + "The `IF` is"
    assert loop_cut(runaway) == code + "Here the loop ends. " + sentence.strip()


def test_one_item_repeated_inside_a_line_is_a_loop_too():
    runaway = "```bbj\nx$ = str(num(a$),2" + ",0" * 40
    cut = loop_cut(runaway)
    assert cut is not None and cut.endswith("\n```") and len(cut) < 40


def test_answers_that_do_not_loop_are_left_alone():
    assert loop_cut("") is None and loop_cut("print 1") is None
    finished = INTRO + "sqlbind sqlconn!,1\nsqlbind sqlconn!,2\nsqlexec sqlconn!\n```\nDone."
    assert loop_cut(finished) is None  # two copies are not a loop
    long_but_varied = "\n".join(f'let v{i}$ = "{chr(65 + i % 26)}" + str(i * {i})' for i in range(30))
    assert loop_cut(long_but_varied + "\nlet") is None
    assert loop_cut("```bbj\n" + "\n" * 50) is None  # blank lines are not a loop to cut


def test_the_real_runaway_answers_of_the_tuned_05b_are_found():
    # Measured on the committed generations of the real 0.5B (+ RFT + DPO, 2026-12-07): 38 of the 42
    # answers that ran to the token limit loop, and none of the 178 that finished is taken for a loop.
    import json
    from pathlib import Path

    path = Path(__file__).parents[1] / "experiments/real-0.5b/2026-12-07/eval/rft-dpo/generations.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    bbj = [r for r in rows if r["suite"] in ("bbj-core", "bbj-challenge")]
    ran_on = [r for r in bbj if r["finish_reason"] == "length"]
    finished = [r for r in bbj if r["finish_reason"] == "stop"]
    assert len(ran_on) == 42 and sum(loop_cut(r["output"]) is not None for r in ran_on) == 38
    assert not any(loop_cut(r["output"]) for r in finished)
