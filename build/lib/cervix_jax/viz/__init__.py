"""Figures. One module per concern: `sheet` (dataset contact sheets), `curves` (ROC, score
histograms), `overlay` (heatmap overlays, grids), `regulator` (paper A's regulator evolution)."""
