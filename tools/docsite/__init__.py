"""Build-time parts of the documentation site (MkDocs hooks and generators).

Not part of the installed package: these modules run only while
``mkdocs build`` renders ``docs/``. ``hooks.py`` is the entry point named in
``mkdocs.yml``; each other module has one job (math, tutorials, figures, CLI
reference).
"""
