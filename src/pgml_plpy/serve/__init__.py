"""The shared runtime on Ray Serve: `python -m pgml_plpy.serve --port PORT` (command.py).

app.py holds the Ray Serve deployments, replica.py what a model replica does; the backend's
side is runtimes/ray.py.
"""
