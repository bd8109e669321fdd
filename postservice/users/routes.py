"""Account endpoints: /api/v1/users/..."""

from flask import Blueprint, Response
from flask_jwt_extended import get_jwt, jwt_required

from .. import throttling
from ..auth import current_user_id, token_response
from ..revocation import revoke
from ..validation import load_body
from . import service
from .schemas import LoginSchema, RegisterSchema, UserSchema

bp = Blueprint("users", __name__, url_prefix="/api/v1/users")

register_schema = RegisterSchema()
login_schema = LoginSchema()
user_schema = UserSchema()


@bp.post("/register")
@throttling.limit("REGISTER_RATE_LIMIT")
def register():
    user_id = service.register(**load_body(register_schema))
    return token_response(user_id, status=201)


@bp.post("/login")
@throttling.limit("LOGIN_RATE_LIMIT")
def login():
    user_id = service.authenticate(**load_body(login_schema))
    return token_response(user_id)


@bp.get("/me")
@jwt_required()
def me():
    return user_schema.dump(service.get_user(current_user_id()))


@bp.post("/logout")
@jwt_required()
def logout():
    revoke(get_jwt())
    response = Response(status=204)
    del response.headers["Content-Type"]  # there is no content to have a type
    return response
