"""The data stage's tier 2 check (`data.quality_check`): training answers whose BBj passes the checker
but calls a BBjAPI method that does not exist, jumps to a missing label, or has no statement are
reported in the audit, and set aside with `reject`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console
from train_helpers import SYSTEM, data_config, read_jsonl, write_jsonl

from bbjtune.data.chatml import Example
from bbjtune.data.scan import ScanOptions, summarise

QUIET = Console(stderr=True, quiet=True)


def chat(prompt: str, code: str) -> dict:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": f"Here it is:\n\n```bbj\n{code}\n```\n"},
        ]
    }


GOOD = 'sysgui! = BBjAPI().openSysGui("X0")\nwindow! = sysgui!.addWindow(10, 10, 200, 100, "Hi")\nprint "ok"\nend'
INVENTED = 'api! = BBjAPI()\napp! = api!.openApp("orders")\nprint "ok"\nend'
MISSING_LABEL = 'ch = unt\nopen (ch, err=no_file)"CUSTOMER"\nclose (ch)\nend'
ONLY_REM = "rem this program prints nothing\nrem at all"
BROKEN = 'print ("a"\nend'


def info_for(code: str, **options):
    ex = Example(file="f.jsonl", line=1, offset=0, messages=chat("Write it.", code)["messages"], extra={})
    return summarise(ex, ScanOptions(fix_escapes=True, scrub=True, **options))[0]


def test_tier2_findings_of_checker_clean_answers():
    assert info_for(GOOD, check_code=True, check_quality=True).quality_error is None
    invented = info_for(INVENTED, check_code=True, check_quality=True)
    assert invented.quality_rules == ("unknown-method",) and "openApp" in invented.quality_error
    assert invented.quality_error.startswith("BBj block 1, line 2: unknown-method")
    label = info_for(MISSING_LABEL, check_code=True, check_quality=True)
    assert label.quality_rules == ("undefined-label",) and "no_file" in label.quality_error
    assert info_for(ONLY_REM, check_code=True, check_quality=True).quality_rules == ("no-statement",)
    # code that does not parse gets the checker's error, not tier 2's guesses
    broken = info_for(BROKEN, check_code=True, check_quality=True)
    assert broken.code_error and broken.quality_error is None and broken.quality_rules == ()
    # off: nothing is looked at
    assert info_for(INVENTED, check_code=True, check_quality=False).quality_error is None
    # the tier 2 check does not need the checker's verdicts to be reported
    alone = info_for(BROKEN, check_code=False, check_quality=True)
    assert alone.code_error is None and alone.quality_error is None
    assert info_for(INVENTED, check_code=False, check_quality=True).quality_rules == ("unknown-method",)


def prepare(tmp_path: Path, quality_check: str):
    from bbjtune.data.stage import prepare as run

    rows = [chat(f"Program {i}: print a greeting number {i}.", f'print "hello {i}"\nend') for i in range(6)]
    rows += [
        chat("Open the sales application.", INVENTED),
        chat("Open the customer file, jumping on error.", MISSING_LABEL),
        chat("Show a window.", GOOD),
    ]
    cfg = data_config(tmp_path, [write_jsonl(tmp_path / "chat.jsonl", rows)], quality_check=quality_check)
    run(cfg, cfg.data_dir, console=QUIET)
    audit = json.loads((cfg.data_dir / "audit.json").read_text())
    return read_jsonl(cfg.data_dir / "train.jsonl"), read_jsonl(cfg.data_dir / "rejected.jsonl"), audit, cfg


@pytest.mark.parametrize("mode", ["report", "reject"])
def test_data_stage_reports_or_sets_aside(tmp_path, mode):
    train, rejected, audit, cfg = prepare(tmp_path, mode)
    code = audit["code"]
    assert code["quality_check"] == mode and code["examples_flagged"] == 2
    assert code["flagged_by_rule"] == {"unknown-method": 1, "undefined-label": 1}
    assert [f["where"].rsplit(":", 1)[1] for f in code["flags"]] == ["7", "8"]
    report = (cfg.data_dir / "report.html").read_text(encoding="utf-8")
    assert "Tier 2 findings in answers that pass the checker" in report and "openApp" in report
    asked = {r["messages"][1]["content"] for r in train}
    set_aside = [r for r in rejected if r["reason"] == "code-quality"]
    if mode == "report":
        assert len(train) == 9 and not set_aside and "kept (data.quality_check: reject" in report
    else:
        assert len(train) == 7 and "Show a window." in asked and "Open the sales application." not in asked
        assert sorted(r["line"] for r in set_aside) == [7, 8]
        assert "unknown-method" in set_aside[0]["detail"] and "undefined-label" in set_aside[1]["detail"]
        assert audit["rejected"]["by_reason"]["code-quality"] == 2
