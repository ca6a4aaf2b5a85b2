"""Reproducers for upstream reports (``normcheck verify --repro DIR``): for each distinct failure
of a run, a standalone Python script and an .npz of its inputs that rerun the failing case with
only the framework and NumPy installed.

``call`` declares what a framework's repro module is given and returns (imports nothing heavy);
``select`` picks one row per distinct failure, ``inputs`` turns its case back into arrays,
``script`` writes the script's text, ``user_code`` the lines that load a user's implementation,
``index`` the listing, and ``write`` puts the files in the directory and returns records.
"""
