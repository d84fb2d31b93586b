"""A scan's options: built from the settings, stored with the scan, read back typed by each job."""
from __future__ import annotations

from tagger import config, scan
from tagger.db import schema as s
from tagger.db.engine import session_scope
from tagger.options import Hearing, ScanOptions


def test_options_come_from_the_settings_and_come_back_from_the_record(tmp_path):
    settings = config.load({"data_dir": tmp_path / "data", "windows": 6, "first_windows": 2, "window_step": 0,
                            "early_stop": 0.8, "min_confidence": 0.5, "overwrite": True, "model": "gtzan-mfcc-svm"},
                           config_file=tmp_path / "none.toml", environ={})
    options = ScanOptions.from_settings(settings, dry_run=True)
    assert options == ScanOptions(dry_run=True, force=False, min_confidence=0.5, overwrite=True,
                                  model="gtzan-mfcc-svm", hearing=Hearing(6, 2, 0, 0.8))
    scan.prepare_database(settings)
    scan_id = scan.create(settings, [str(tmp_path)], options, follows=False)
    with session_scope(settings.database_url) as db:
        stored = db.get(s.Scan, scan_id).options
    assert stored["hearing"] == {"windows": 6, "first": 2, "step": 0, "stop": 0.8, "give_up": Hearing.give_up}
    assert ScanOptions.from_record(stored) == options


def test_rows_of_scans_recorded_before_hearing_was_nested_read_the_same():
    flat = {"dry_run": False, "force": True, "min_confidence": 0.7, "overwrite": False, "model": "",
            "windows": 4, "first_windows": 0, "window_step": 1, "early_stop": 0.95}
    assert ScanOptions.from_record(flat) == ScanOptions(force=True, min_confidence=0.7,
                                                        hearing=Hearing(4, 0, 1, 0.95, give_up=0.0))
    # a scan recorded before hearing could give up keeps hearing as it was asked to
    nested = {"hearing": {"windows": 10, "first": 3, "step": 2, "stop": 0.95}}
    assert ScanOptions.from_record(nested).hearing == Hearing(10, 3, 2, 0.95, give_up=0.0)
    assert ScanOptions.from_record(None) == ScanOptions()
