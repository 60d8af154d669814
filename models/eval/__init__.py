"""Offline evaluation of model bundles on the synthetic scenes (issue 3): metrics, runner, report.

``metrics`` is pure numpy; ``runner.evaluate`` embeds scenes with ONNX Runtime on CPU;
``report.write_report`` writes ``eval.json`` and ``EVAL.md``; ``cli.eval_command`` backs both
``python -m models.eval`` and ``clipsearch models eval``. Import the submodules directly: this
package keeps its import light (no onnxruntime) so the CLI can load lazily.
"""
