"""Paged list responses: the body stays a JSON array; the page sits in the headers
(``X-Total-Count``, ``X-Page``, ``X-Per-Page`` and an RFC 8288 ``Link`` with first, prev,
next and last)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from flask import request
from marshmallow import fields, validate

from dtx_trials.api.schemas import StrictSchema
from dtx_trials.services.listing import MAX_PER_PAGE, Page

API_PER_PAGE = 100


class PageArgs(StrictSchema):
    """Paging shared by the list endpoints."""

    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=1_000_000))
    per_page = fields.Integer(
        load_default=API_PER_PAGE, validate=validate.Range(min=1, max=MAX_PER_PAGE)
    )


class ListArgs(PageArgs):
    """Paging, stable sort and subject-code search shared by the list endpoints."""

    q = fields.String(load_default=None, validate=validate.Length(min=1, max=32))
    dir = fields.String(load_default="asc", validate=validate.OneOf(["asc", "desc"]))


def page_headers(result: Page[Any]) -> dict[str, str]:
    """Headers describing where ``result`` sits in the whole list."""
    kept = {k: v for k, v in request.args.items() if k != "page"}

    def at(number: int) -> str:
        return f"<{request.base_url}?{urlencode({**kept, 'page': number})}>"

    links = [f'{at(1)}; rel="first"', f'{at(result.pages)}; rel="last"']
    if result.page > 1:
        links.append(f'{at(min(result.page - 1, result.pages))}; rel="prev"')
    if result.page < result.pages:
        links.append(f'{at(result.page + 1)}; rel="next"')
    return {
        "X-Total-Count": str(result.total),
        "X-Page": str(result.page),
        "X-Per-Page": str(result.per_page),
        "Link": ", ".join(links),
    }
