"""A tiny, real, hand-initialised ONNX bundle for tests and demos: no weights from a hub, no torch.

The text tower is a bag of word pieces: an embedding table (special tokens zero, stop words
damped) with masked mean pooling, giving a *lexical* sentence space, and a random projection of
it as the joint space. The image tower average-pools the normalised pixels to a 4x4 grid per
channel and projects it, so images with similar colour layouts get similar vectors. The two
towers are not aligned: text→image search with this bundle is not semantic, and the manifest
says so. Everything is derived from ``seed``; the same seed gives the same bytes.

Build from the shell: ``python -m models.tiny OUT_DIR [--seed N]``.
"""

from __future__ import annotations

import argparse
import logging
import string
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

from models.data.scenes import BACKGROUNDS, COLOURS, COUNT_WORDS, POSITIONS, SHAPES, SIZES
from service.core.bundle.manifest import (
    CLIP_MEAN,
    CLIP_STD,
    DescriptionEmbedder,
    ImageTower,
    Manifest,
    Spaces,
    TextTower,
    hash_files,
    write_manifest,
)

logger = logging.getLogger(__name__)

OPSET = 17
IR_VERSION = 8  # what opset 17 shipped with; every supported onnxruntime reads it
IMAGE_SIZE = 32
GRID = 4
JOINT_DIM = 64
SENTENCE_DIM = 128
MAX_TOKENS = 64
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # [PAD] must stay id 0
STOP_WORDS = frozenset(("a", "an", "the", "and", "of", "on", "at", "in", "with", "is", "there"))
FILES = ("tokenizer.json", "image.onnx", "text.onnx")

_SCENE_EXTRA = """
little big medium-sized middle corner edge side upper lower centre center gray object objects
shape shapes circles squares triangles background picture photo image next to above below beside
between near far left right top bottom four five six zero
"""
_SCENE_WORDS = [*COLOURS, *SHAPES, *SIZES, *BACKGROUNDS, *POSITIONS, *COUNT_WORDS]
_SCENE_WORDS += _SCENE_EXTRA.split()
# A few hundred common English words, so that unseen words split into useful pieces.
_COMMON_TEXT = """
the be to of and a an in that have i it for not on with he as you do at this but his by from they
we say her she or will my one all would there their what so up out if about who get which go me
when make can like time no just him know take people into year your good some could them see other
than then now look only come its over think also back after use two how our work first well way
even new want because any these give day most us is are was were been has had did said made went
gone seen done more many much very each few less least lot small large big long short high low old
young great little own same different right left next early late hard easy red blue green yellow
black white grey orange purple pink brown colour color bright dark light shape circle square
triangle round flat line dot ring box ball star heart cube sphere picture photo image drawing
painting scene view background foreground object thing part side top bottom middle centre center
corner edge front behind above below under over between near far inside outside around across
along beside against toward man woman child boy girl person dog cat bird fish horse cow tree
flower grass leaf sky sun moon cloud rain snow water river sea lake mountain hill road street car
bus train bike boat plane house home room door window table chair bed wall floor city town park
garden field forest beach food apple bread cup glass bottle book paper phone computer screen hand
face eye head hair foot running walking sitting standing playing eating holding looking wearing
smiling sleeping open closed full empty hot cold warm happy sad beautiful quickly slowly together
alone three four five six seven eight nine ten hundred once twice again always never sometimes
often here where why while until during before since without within through against upon shows
showing contains containing
"""
_COMMON_WORDS = _COMMON_TEXT.split()


def _corpus() -> list[str]:
    scene = " ".join(_SCENE_WORDS).split()
    # Repeating the scene vocabulary makes sure each scene word ends up as one whole token.
    return [" ".join(scene)] * 8 + [" ".join(_COMMON_WORDS)] * 2 + scene + _COMMON_WORDS


def build_tokenizer() -> Tokenizer:
    """A BERT-style WordPiece tokenizer trained on the built-in corpus.

    The trainer numbers continuing pieces (``##x``) in hash-map order, so they are declared up
    front as extra special tokens to pin every id; the final tokenizer is then rebuilt from the
    trained vocabulary with only the real special tokens. No truncation or padding is stored:
    the engine sets both explicitly.
    """
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    corpus = _corpus()
    pieces = sorted(
        {
            "##" + ch
            for line in corpus
            for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(line))
            for ch in word[1:]
        }
    )
    trainer_tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    trainer_tok.normalizer = normalizer
    trainer_tok.pre_tokenizer = pre_tokenizer
    trainer = trainers.WordPieceTrainer(
        vocab_size=4096,
        min_frequency=1,
        special_tokens=[*SPECIAL_TOKENS, *pieces],
        show_progress=False,
    )
    trainer_tok.train_from_iterator(corpus, trainer=trainer)
    vocab = trainer_tok.get_vocab(with_added_tokens=False)
    if vocab.get("[PAD]") != 0:
        raise RuntimeError("tokenizer training must put [PAD] at id 0")

    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return tok


def _embedding_table(vocab: dict[str, int], rng: np.random.Generator) -> np.ndarray:
    table = rng.standard_normal((len(vocab), SENTENCE_DIM)).astype(np.float32)
    for token, idx in vocab.items():
        bare = token.removeprefix("##")
        if token in SPECIAL_TOKENS:
            table[idx] = 0.0
        elif token in STOP_WORDS or all(ch in string.punctuation for ch in bare):
            # Stop words and punctuation should barely move a sentence's mean.
            table[idx] *= 0.1
    return table


def _value_info(name: str, elem: int, shape: list[int | str]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _model(graph: onnx.GraphProto, doc: str) -> onnx.ModelProto:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="clipsearch.models.tiny",
        producer_version="0.1.0",
        doc_string=doc,
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def build_text_graph(table: np.ndarray, projection: np.ndarray) -> onnx.ModelProto:
    """input_ids, attention_mask [b, seq] -> text_embeds [b, 64], sentence_embeds [b, 128]."""
    inits = [
        numpy_helper.from_array(table, "token_embeddings"),
        numpy_helper.from_array(projection, "text_projection"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis_seq"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axis_feat"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
    ]
    nodes = [
        helper.make_node("Gather", ["token_embeddings", "input_ids"], ["tokens"], axis=0),
        helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask", "axis_feat"], ["mask3"]),
        helper.make_node("Mul", ["tokens", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis_seq"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["mask", "axis_seq"], ["count"], keepdims=1),
        # An all-zero mask must not divide by zero: the mean of nothing is the zero vector.
        helper.make_node("Max", ["count", "one"], ["denominator"]),
        helper.make_node("Div", ["summed", "denominator"], ["sentence_embeds"]),
        helper.make_node("MatMul", ["sentence_embeds", "text_projection"], ["text_embeds"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_text_tower",
        inputs=[
            _value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            _value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        outputs=[
            _value_info("text_embeds", TensorProto.FLOAT, ["batch", JOINT_DIM]),
            _value_info("sentence_embeds", TensorProto.FLOAT, ["batch", SENTENCE_DIM]),
        ],
        initializer=inits,
    )
    return _model(graph, "tiny text tower: masked mean of word-piece embeddings + projection")


def build_image_graph(layout: np.ndarray, colour: np.ndarray) -> onnx.ModelProto:
    """pixel_values [batch, 3, 32, 32] -> image_embeds [batch, 64] (colour layout).

    The 4x4 grid is centred per channel, so the objects' layout is not drowned by the plain
    background; the background's mean colour enters through its own, smaller projection.
    """
    kernel = IMAGE_SIZE // GRID
    nodes = [
        helper.make_node(
            "AveragePool",
            ["pixel_values"],
            ["grid"],
            kernel_shape=[kernel, kernel],
            strides=[kernel, kernel],
        ),
        helper.make_node("ReduceMean", ["grid"], ["mean_colour"], axes=[2, 3], keepdims=1),
        helper.make_node("Sub", ["grid", "mean_colour"], ["centred"]),
        helper.make_node("Flatten", ["centred"], ["layout"], axis=1),
        helper.make_node("Flatten", ["mean_colour"], ["colour"], axis=1),
        helper.make_node("MatMul", ["layout", "layout_projection"], ["layout_embeds"]),
        helper.make_node("MatMul", ["colour", "colour_projection"], ["colour_embeds"]),
        helper.make_node("Add", ["layout_embeds", "colour_embeds"], ["image_embeds"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_image_tower",
        inputs=[
            _value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, IMAGE_SIZE, IMAGE_SIZE])
        ],
        outputs=[_value_info("image_embeds", TensorProto.FLOAT, ["batch", JOINT_DIM])],
        initializer=[
            numpy_helper.from_array(layout, "layout_projection"),
            numpy_helper.from_array(colour, "colour_projection"),
        ],
    )
    return _model(graph, "tiny image tower: centred 4x4 colour grid + mean colour, projected")


def build_manifest(out_dir: Path) -> Manifest:
    return Manifest(
        name="tiny-test",
        version="0.1.0",
        trained=False,
        summary=(
            "Hand-initialised test bundle, not trained: lexical text embeddings (mean of "
            "word-piece vectors) and colour-layout image embeddings. The towers are not aligned, "
            "so text-to-image search is not semantic; text-to-text and image-to-image work."
        ),
        image_tower=ImageTower(
            file="image.onnx",
            image_size=IMAGE_SIZE,
            resize="shortest_edge_center_crop",
            interpolation="bicubic",
            mean=CLIP_MEAN,
            std=CLIP_STD,
            output_dim=JOINT_DIM,
        ),
        text_tower=TextTower(
            file="text.onnx",
            tokenizer="tokenizer.json",
            max_tokens=MAX_TOKENS,
            pad_id=0,
            output_dim=JOINT_DIM,
            sentence_output_name="sentence_embeds",
            sentence_dim=SENTENCE_DIM,
        ),
        description_embedder=DescriptionEmbedder(source="text_tower", output_dim=SENTENCE_DIM),
        spaces=Spaces(image=JOINT_DIM, caption=JOINT_DIM, description=SENTENCE_DIM),
        files=hash_files(out_dir, list(FILES)),
    )


def build_tiny_bundle(out_dir: Path, *, seed: int = 0) -> Path:
    """Write tokenizer.json, image.onnx, text.onnx and manifest.json into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    tokenizer = build_tokenizer()
    tokenizer.save(str(out_dir / "tokenizer.json"), pretty=True)
    vocab = tokenizer.get_vocab(with_added_tokens=False)

    table = _embedding_table(vocab, rng)
    text_projection = rng.standard_normal((SENTENCE_DIM, JOINT_DIM)) / np.sqrt(SENTENCE_DIM)
    layout_projection = rng.standard_normal((3 * GRID * GRID, JOINT_DIM)) / np.sqrt(JOINT_DIM)
    colour_projection = 0.5 * rng.standard_normal((3, JOINT_DIM)) / np.sqrt(JOINT_DIM)
    text = build_text_graph(table, text_projection.astype(np.float32))
    image = build_image_graph(
        layout_projection.astype(np.float32), colour_projection.astype(np.float32)
    )
    (out_dir / "text.onnx").write_bytes(text.SerializeToString(deterministic=True))
    (out_dir / "image.onnx").write_bytes(image.SerializeToString(deterministic=True))

    write_manifest(out_dir, build_manifest(out_dir))
    logger.info("built tiny bundle in %s (seed %d, vocab %d)", out_dir, seed, len(vocab))
    return out_dir


def build_tiny_narrow_bundle(out_dir: Path, *, seed: int = 1) -> Path:
    """A second tiny bundle, ``tiny-narrow@0.1.0``: the tiny bundle's towers projected to a
    32-dim joint space (the tiny bundle's is 64), with a card naming its domain. For tests that
    serve two bundles of different dimensions at once."""
    from service.core.bundle.manifest import Card, load_bundle, write_manifest

    dim = 32
    out_dir = build_tiny_bundle(Path(out_dir), seed=seed)
    rng = np.random.default_rng(seed)
    text = onnx.load(str(out_dir / "text.onnx"))
    image = onnx.load(str(out_dir / "image.onnx"))

    def project(model: onnx.ModelProto, name: str, scale: float) -> None:
        [old] = [t for t in model.graph.initializer if t.name == name]
        rows = old.dims[0]
        new = scale * rng.standard_normal((rows, dim)) / np.sqrt(max(rows, dim))
        old.CopyFrom(numpy_helper.from_array(new.astype(np.float32), name))
        model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = dim

    project(text, "text_projection", 1.0)
    project(image, "layout_projection", 1.0)
    project(image, "colour_projection", 0.5)
    for model in (text, image):
        onnx.checker.check_model(model, full_check=True)
    (out_dir / "text.onnx").write_bytes(text.SerializeToString(deterministic=True))
    (out_dir / "image.onnx").write_bytes(image.SerializeToString(deterministic=True))
    base = load_bundle(out_dir, verify=False).manifest.model_dump()
    manifest = Manifest.model_validate(
        {
            **base,
            "name": "tiny-narrow",
            "image_tower": {**base["image_tower"], "output_dim": dim},
            "text_tower": {**base["text_tower"], "output_dim": dim},
            "spaces": {**base["spaces"], "image": dim, "caption": dim},
            "files": hash_files(out_dir, list(FILES)),
            "card": Card(domain="test colour layouts (32-dim tiny bundle)").model_dump(),
        }
    )
    write_manifest(out_dir, manifest)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.tiny", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("out_dir", type=Path, help="folder to write the bundle into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    build_tiny_bundle(args.out_dir, seed=args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
