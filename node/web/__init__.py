"""The web page a node serves at ``/`` (see pages.py): its static files live here."""
