"""Render an artifact's README.md from its card.json (run after convert/verify/evaluate)."""
from __future__ import annotations

import json
from pathlib import Path


def render(directory: Path) -> str:
    card = json.loads((directory / "card.json").read_text())
    src = card["source"]
    lines = [
        f"# {card['name']} {card['version']}: musicnn ({src['training_data']}) with a genre head",
        "",
        f"Keras 3 port of the `{src['checkpoint']}` checkpoint of {src['package']}, by {src['authors']} "
        f"(\"{src['paper']}\"). Licence: ISC, see `LICENSE`. Made by `{card['command']}`.",
        "",
        f"- input: {card['features']['log']} mel spectrogram, {card['features']['sr']} Hz, "
        f"n_fft {card['features']['n_fft']}, hop {card['features']['hop_length']}, "
        f"{card['features']['n_mels']} Slaney mel bands, patches of {card['features']['patch_frames']} frames (3 s)",
        f"- output: {len(card['tags'])} tag activations per patch, averaged per track; genre head "
        f"(`tagger.genres`, head `{card['genre_head']['head']}`) → {len(card['labels'])} genres: "
        + ", ".join(card["labels"]),
        f"- {card['genre_head']['score']}; probabilities: {card['genre_head']['probabilities']}; "
        f"several genres: {card['genre_head']['multi_value']}",
        f"- published result: {src['published_result']}",
    ]
    check = card.get("checks", {}).get("port_vs_original")
    if check:
        feat = card["checks"].get("features_vs_original_formula", {})
        lines += [
            "",
            "## Faithfulness",
            f"Port vs original graph ({check['original']}), {check['inputs']}: max |difference| of a tag "
            f"activation {check['max_abs_diff']:.2e} (mean {check['mean_abs_diff']:.1e}; tolerance 1e-4).",
        ]
        if feat:
            lines.append(
                f"Features vs the original formula ({feat['original']}): max |difference| "
                f"{feat['max_abs_diff_float32']:.1e} before the float16 step, {feat['max_abs_diff_float16']:.1e} "
                f"with it ({feat['note']}; {feat['share_over_1e-4_float16']:.1e} of values)."
            )
    if card.get("top_tags"):
        lines += ["", "## Top tags on real recordings (GTZAN, whole 30 s clip, mean over patches)", "",
                  "| clip | top 5 tags |", "| --- | --- |"]
        for clip, tags in card["top_tags"].items():
            lines.append(f"| {clip} | " + ", ".join(f"{t} {v:.2f}" for t, v in tags) + " |")
    gtzan = card.get("metrics", {}).get("gtzan")
    if gtzan:
        lines += ["", "## Genre accuracy on GTZAN", "", f"{gtzan['data']}; {gtzan['protocol']}.", "",
                  "| fold | accuracy | macro accuracy | macro F1 | valid.txt accuracy | true class among written genres |",
                  "| --- | --- | --- | --- | --- | --- |"]
        folds = [k for k in gtzan if isinstance(gtzan[k], dict) and "per_class" in gtzan[k]]
        for key in folds:
            g = gtzan[key]
            lines.append(f"| {key} | {g['accuracy']} | {g['macro_accuracy']} | {g['macro_f1']} | "
                         f"{g['valid_txt']['accuracy']} | {g.get('hit_in_written_genres')} |")
        lines += ["", "| class | n | " + " | ".join(f"{k} acc / F1" for k in folds) + " |",
                  "| --- | --- |" + " --- |" * len(folds)]
        for c, v in gtzan[folds[0]]["per_class"].items():
            cells = " | ".join(f"{gtzan[k]['per_class'][c]['accuracy']} / {gtzan[k]['per_class'][c]['f1']}" for k in folds)
            lines.append(f"| {c} | {v['n']} | {cells} |")
        speed = card["metrics"].get("speed")
        if speed:
            lines += ["", f"Speed: {speed['ms_per_track']} ms per track (decode + features + model, "
                          f"{speed['windows_per_track']} windows), {speed['ms_per_track_model']} ms features + model; "
                          f"{speed['machine']}."]
    return "\n".join(lines) + "\n"


def write(directory: Path) -> Path:
    out = directory / "README.md"
    out.write_text(render(directory))
    return out
