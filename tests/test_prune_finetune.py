"""Fine-tuning pruned Keras 3 models (issue 12): with labels, by distillation without labels, early stop, masks
that keep zeros at zero, and refusals of data that does not fit — on the real Fashion-MNIST CNN."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgepack.converters.errors import PruningError


def _images(x: np.ndarray) -> np.ndarray:
    return x[..., None].astype("float32") / 255.0


def _load(path: Path):  # type: ignore[no-untyped-def]
    import keras

    return keras.models.load_model(path, compile=False)


def _agreement(a, b, x: np.ndarray) -> float:  # type: ignore[no-untyped-def]
    return float((a.predict(x, verbose=0).argmax(1) == b.predict(x, verbose=0).argmax(1)).mean())


def test_distillation_without_labels_improves_agreement_with_the_teacher(
        fashion_model_path: Path, fashion_train: tuple[np.ndarray, np.ndarray],
        fashion_test: tuple[np.ndarray, np.ndarray]) -> None:
    from edgepack.converters.pruning.keras_finetune import finetune
    from edgepack.converters.pruning.keras_sparsity import magnitude_masks, measured_sparsity

    teacher = _load(fashion_model_path)
    student = _load(fashion_model_path)
    masks = magnitude_masks(student, sparsity=0.9)
    masks.apply(student)
    x_test = _images(fashion_test[0][:500])
    before = _agreement(student, teacher, x_test)
    result = finetune(student, _images(fashion_train[0][:3000]), teacher=teacher, epochs=2, masks=masks,
                      progress=False)
    after = _agreement(student, teacher, x_test)
    assert result.mode == "distill" and result.epochs_run >= 1 and len(result.val_loss) == result.epochs_run
    assert after > before, (before, after)
    assert abs(measured_sparsity(student)[0] - 0.9) <= 0.01  # zeros stayed zero through training
    assert result.to_json()["mode"] == "distill"


def test_labels_mode_trains_and_stops_early_on_the_validation_split(
        fashion_model_path: Path, fashion_train: tuple[np.ndarray, np.ndarray]) -> None:
    from edgepack.converters.pruning.keras_finetune import finetune

    student = _load(fashion_model_path)
    x, y = fashion_train
    before = student.get_weights()
    result = finetune(student, _images(x[:600]), y[:600], epochs=6, learning_rate=0.0, patience=1,
                      validation_split=0.3, progress=True)  # nothing moves: no epoch improves on the first
    assert result.mode == "labels"
    assert result.stopped_early and result.epochs_run == 2
    assert all(np.array_equal(a, b) for a, b in zip(before, student.get_weights()))
    assert len(result.val_loss) == result.epochs_run


def test_sparsify_without_labels_distils_from_the_unpruned_model(
        fashion_model_path: Path, fashion_train: tuple[np.ndarray, np.ndarray]) -> None:
    from edgepack.converters.pruning.keras_sparsity import measured_sparsity, sparsify

    model = _load(fashion_model_path)
    pruned, report = sparsify(model, _images(fashion_train[0][:1000]), sparsity=0.5, epochs=2, progress=False)
    assert report["finetune"]["mode"] == "distill" and report["teacher"] == "the unpruned model"
    assert abs(measured_sparsity(pruned)[0] - 0.5) <= 0.01 and abs(report["sparsity"] - 0.5) <= 0.01


def test_bad_fine_tuning_data_is_refused(fashion_model_path: Path,
                                         fashion_train: tuple[np.ndarray, np.ndarray]) -> None:
    from edgepack.converters.pruning.keras_finetune import finetune

    model = _load(fashion_model_path)
    x, y = fashion_train[0][:50], fashion_train[1][:50]
    with pytest.raises(PruningError, match=r"expects \(N, 28, 28, 1\)"):
        finetune(model, x, y)  # raw (N, 28, 28) images, no channel axis
    with pytest.raises(PruningError, match=r"labels \(y\) or a teacher"):
        finetune(model, _images(x))
    with pytest.raises(PruningError, match="10 outputs"):
        finetune(model, _images(x), y + 5)  # labels up to 14 for a 10-class output
    with pytest.raises(PruningError, match="one label per sample"):
        finetune(model, _images(x), y[:10])
    with pytest.raises(PruningError, match="targets have shape"):
        finetune(model, _images(x), np.zeros((50, 3), dtype="float32"))
