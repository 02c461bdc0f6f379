"""Images in and out: files, folders, paired folders, the bundled photos, tensorflow-datasets.

``div2k`` imports TensorFlow only when called; importing this package never does.
"""

from jaxir.data.images import ImageRecord, crop_to_multiple, load_image, save_image
from jaxir.data.folders import image_folder, paired_folders, read_folder
from jaxir.data.photos import BUNDLED_PHOTOS, bundled_photos
from jaxir.data.div2k import DIV2K_DEGRADATIONS, div2k

__all__ = ["ImageRecord", "crop_to_multiple", "load_image", "save_image", "image_folder", "paired_folders",
           "read_folder", "BUNDLED_PHOTOS", "bundled_photos", "DIV2K_DEGRADATIONS", "div2k"]
