"""The website's tools: its build, its editions and its tests.

* :mod:`bnbook.site.numbering`, :mod:`bnbook.site.html` - Sphinx extensions of the build
  (appendix numbering; no thebe scripts or stored widget state on the pages); ``static/`` - the
  site's stylesheet and icon;
* :mod:`bnbook.site.vendor` - MathJax and the widget manager from pinned, checksummed npm
  tarballs (``python -m bnbook.site.vendor``);
* :mod:`bnbook.site.check` - every page in headless Chromium (``make site-test``);
  :mod:`bnbook.site.page_checks` - the checks it runs inside each page;
  :mod:`bnbook.site.selftest` - the planted bugs it must catch first;
* :mod:`bnbook.site.myst_to_markdown` - MyST to plain Jupyter Markdown, numbered as the website
  numbers; :mod:`bnbook.site.jupyter_edition` - the Jupyter edition that ``make lab`` opens;
  :mod:`bnbook.site.student` - the student edition without solutions (``make student``);
  :mod:`bnbook.site.lab_check` - every edition in JupyterLab in headless Chromium
  (``make lab-test``).
"""
