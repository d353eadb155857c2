"""The crop engine: anchors, objectness maps, box scoring, strategies, crop quality and crop jobs."""
