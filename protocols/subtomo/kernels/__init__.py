"""Pure kernels of the subtomogram-averaging family: ndarrays in, ndarrays out, no database and
no files."""
