"""Pure form engine: field types, the safe expression language, edit checks, schedule, renderers.

Modules: ``model`` (the frozen form contract), ``expressions`` (REDCap-compatible logic:
``parse``/``evaluate``), ``fields`` (``coerce_value``), ``checks`` (``evaluate_form``,
``check_form_definition``, ``evaluate_eligibility``), ``schedule`` (``plan_visits``,
``window_status``, ``next_due``), ``render`` (``form_to_json``, ``form_to_fhir_questionnaire``);
``static/expressions.js`` is the same expression language for the browser.

Imports no other package of ours and nothing of Flask or SQLAlchemy.
"""
