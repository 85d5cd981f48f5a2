"""The synthetic default dataset: printed, handwritten and form pages with exact annotations.

``generate(out_dir, pages, seed, workers)`` writes the images and train/val manifests;
``make_page(seed, i)`` makes one page in memory; ``write_previews`` draws annotated samples,
``write_contact_sheet`` every page type through each of its print and scan processes.
"""

from docrec.synth.generate import DEFAULT_MIX, PAGE_TYPES, SynthPage, generate, make_page
from docrec.synth.preview import write_contact_sheet, write_previews

__all__ = ["DEFAULT_MIX", "PAGE_TYPES", "SynthPage", "generate", "make_page", "write_contact_sheet", "write_previews"]
