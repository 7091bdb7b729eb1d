"""ipywidgets + plotly front ends over the workbench library, one per capability."""
