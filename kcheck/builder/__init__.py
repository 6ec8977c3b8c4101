"""kcheck build-kernel: rebuild the distro kernel with the catalog's fixes."""
