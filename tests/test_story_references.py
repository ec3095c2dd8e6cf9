"""chrF and BLEU against references: the sacrebleu-based metrics, and story_metrics.py --references (model output
against originals, a translation against references or its round trip)."""
import json

import pytest
from helpers import load_script, run_main, write_jsonl

from regional_tinystories import metrics

story_metrics = load_script("scripts/story_metrics.py")


def test_chrf_and_bleu_on_fixed_strings():
    assert metrics.chrf(["राजू ने गेंद फेंकी।"], ["राजू ने गेंद फेंकी।"]) == pytest.approx(100)
    assert metrics.chrf(["abc def"], ["xyz uvw"]) == 0
    assert 0 < metrics.chrf(["राजू ने गेंद फेंकी।"], ["राजू ने गेंद पकड़ी।"]) < 100
    # the 'intl' tokenizer splits off the danda, so a spacing difference before it costs nothing
    assert metrics.bleu(["राजू घर आया और सो गया ।"], ["राजू घर आया और सो गया।"]) == pytest.approx(100)


def test_story_metrics_compares_samples_with_their_references(tmp_path):
    samples = [{"ID": "p1", "sample_index": 0, "story": "राजू ने लाल गेंद फेंकी।", "model": "m"},
               {"ID": "p1", "sample_index": 1, "story": "मीरा ने नीली पतंग उड़ाई।", "model": "m"},
               {"ID": "p2", "sample_index": 0, "story": "कोई संदर्भ नहीं।", "model": "m"}]
    references = [{"ID": "p1", "sample_index": 0, "story": "राजू ने लाल गेंद फेंकी।"},
                  {"ID": "p1", "sample_index": 1, "story": "मीरा ने पीली पतंग उड़ाई।"}]
    out = tmp_path / "out"
    result = run_main(story_metrics.main, ["--samples", write_jsonl(str(tmp_path / "s.jsonl"), samples),
                                           "--references", write_jsonl(str(tmp_path / "r.jsonl"), references),
                                           "--language", "hindi", "--dictionary", str(write_words(tmp_path)),
                                           "--out_dir", str(out)])
    assert result.returncode == 0, result.stderr
    with open(out / "story_metrics.json", encoding="utf-8") as f:
        (row,) = json.load(f)
    assert row["reference_pairs"] == 2  # p2 has no reference
    assert row["chrf"] == pytest.approx(metrics.chrf([r["story"] for r in references],
                                                     [s["story"] for s in samples[:2]]))
    assert row["bleu"] == pytest.approx(metrics.bleu([r["story"] for r in references],
                                                     [s["story"] for s in samples[:2]]))
    assert "## Against references" in result.stdout and f"| `m` | 2 | {row['chrf']:.1f} |" in result.stdout


def test_round_trip_back_translations_against_the_original(tmp_path):
    """English -> Hindi -> English: the back-translations are scored against the first translation's sources."""
    original = "Tom had a red ball. He played with it."
    forward = [{"ID": "s1", "language": "hindi", "source": original, "story": "टॉम के पास एक लाल गेंद थी।"}]
    back = [{"ID": "s1", "language": "english", "source": forward[0]["story"], "model": "nllb",
             "story": "Tom had a red ball. He played with it."}]
    out = tmp_path / "out"
    result = run_main(story_metrics.main, ["--samples", write_jsonl(str(tmp_path / "back.jsonl"), back),
                                           "--references", write_jsonl(str(tmp_path / "forward.jsonl"), forward),
                                           "--reference_field", "source", "--language", "english",
                                           "--dictionary", str(write_words(tmp_path)), "--out_dir", str(out)])
    assert result.returncode == 0, result.stderr
    with open(out / "story_metrics.json", encoding="utf-8") as f:
        (row,) = json.load(f)
    assert row["chrf"] == pytest.approx(100) and row["bleu"] == pytest.approx(100)


def test_a_reference_without_its_text_is_one_error_line(tmp_path):
    samples = write_jsonl(str(tmp_path / "s.jsonl"), [{"ID": "p1", "story": "x", "model": "m"}])
    references = write_jsonl(str(tmp_path / "r.jsonl"), [{"ID": "p1", "text": "x"}])
    result = run_main(story_metrics.main, ["--samples", samples, "--references", references, "--language", "hindi",
                                           "--dictionary", str(write_words(tmp_path)), "--out_dir", str(tmp_path)])
    assert result.returncode == 1
    assert result.stderr == f"error: {references}:1: reference record has no 'ID' or no 'story' text\n"


def write_words(folder):
    path = folder / "words.txt"
    path.write_text("राजू\n", encoding="utf-8")
    return path


def tiny_encoder(folder):
    """A randomly initialised BERT with a word-level vocabulary of the test's words, saved as a local model folder."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "।", "राजू", "ने", "लाल", "गेंद", "फेंकी", "मीरा", "नीली",
             "पीली", "पतंग", "उड़ाई"]
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    BertTokenizer(str(folder / "vocab.txt"), do_lower_case=False).save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=32)).save_pretrained(folder)
    return str(folder)


def test_bertscore_with_a_local_encoder(tmp_path):
    encoder = tiny_encoder(tmp_path / "encoder")
    same = ["राजू ने लाल गेंद फेंकी।", "मीरा ने नीली पतंग उड़ाई।"]
    assert metrics.bertscore_f1(same, same, encoder) == pytest.approx(1, abs=1e-5)
    other = metrics.bertscore_f1(same, ["मीरा ने पीली पतंग उड़ाई।", "राजू ने गेंद फेंकी।"], encoder)
    assert 0 < other < 1
    samples = [{"ID": "p1", "story": same[0], "model": "m"}, {"ID": "p2", "story": same[1], "model": "m"}]
    references = [{"ID": "p1", "story": same[0]}, {"ID": "p2", "story": same[1]}]
    result = run_main(story_metrics.main, ["--samples", write_jsonl(str(tmp_path / "s.jsonl"), samples),
                                           "--references", write_jsonl(str(tmp_path / "r.jsonl"), references),
                                           "--bertscore_model", encoder, "--language", "hindi",
                                           "--dictionary", str(write_words(tmp_path)), "--out_dir", str(tmp_path)])
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "story_metrics.json", encoding="utf-8") as f:
        (row,) = json.load(f)
    assert row["bertscore_f1"] == pytest.approx(1, abs=1e-5)
    missing = run_main(story_metrics.main, ["--samples", str(tmp_path / "s.jsonl"), "--references",
                                            str(tmp_path / "r.jsonl"), "--bertscore_model", str(tmp_path / "none"),
                                            "--language", "hindi", "--dictionary", str(write_words(tmp_path)),
                                            "--out_dir", str(tmp_path)])
    assert missing.returncode == 1 and missing.stderr.startswith(f"error: --bertscore_model {tmp_path / 'none'}: ")
    assert missing.stderr.count("\n") == 1
