"""The photo bundle's DEV set: real photographs from Debian packages and queries written for them.

Used to choose the variant and ConSE's settings (``python -m models.photo.dev``), and by the
build to record dev figures. The test suite's photos (scikit-image, scikit-learn, matplotlib,
opencv-doc) are deliberately not here: tuning on them would make the evaluation dishonest.
"""
