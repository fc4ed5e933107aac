"""Signal receivers; filled by the export pipeline."""
