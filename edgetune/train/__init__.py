"""Host-side training (torch)."""
