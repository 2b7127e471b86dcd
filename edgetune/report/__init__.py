"""Reports and plots (matplotlib, host side)."""
