"""Account endpoints: /api/v1/users/..."""

from flask import Blueprint

from ..auth import token_response
from ..validation import load_body
from . import service
from .schemas import LoginSchema, RegisterSchema

bp = Blueprint("users", __name__, url_prefix="/api/v1/users")

register_schema = RegisterSchema()
login_schema = LoginSchema()


@bp.post("/register")
def register():
    user = service.register(**load_body(register_schema))
    return token_response(user.id), 201


@bp.post("/login")
def login():
    user_id = service.authenticate(**load_body(login_schema))
    return token_response(user_id)
