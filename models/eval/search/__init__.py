"""The mixed-kind search evaluation: image-only photos, captioned images, text-only documents and
video segments in one collection, text queries whose right answer is in each kind, R@1/R@10 per
search mode and per item kind, through the public API (``clipsearch models eval-search``)."""
