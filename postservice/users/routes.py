"""Account endpoints: /api/v1/users/..."""

from flask import Blueprint, Response
from flask_jwt_extended import get_jwt, jwt_required

from .. import throttling
from ..auth import current_user_id, token_response
from ..revocation import revoke
from ..validation import load_body
from . import service
from .schemas import (
    ChangePasswordSchema,
    DeleteAccountSchema,
    LoginSchema,
    RegisterSchema,
    UserSchema,
)

bp = Blueprint("users", __name__, url_prefix="/api/v1/users")

register_schema = RegisterSchema()
login_schema = LoginSchema()
change_password_schema = ChangePasswordSchema()
delete_account_schema = DeleteAccountSchema()
user_schema = UserSchema()


def _no_content():
    response = Response(status=204)
    del response.headers["Content-Type"]  # there is no content to have a type
    return response


@bp.post("/register")
@throttling.limit("REGISTER_RATE_LIMIT")
def register():
    user = service.register(**load_body(register_schema))
    return token_response(user.id, user.token_version, status=201)


@bp.post("/login")
@throttling.limit("LOGIN_RATE_LIMIT")
def login():
    body = load_body(login_schema)
    with throttling.password_attempt(body["email"]):
        user_id, version = service.authenticate(**body)
    return token_response(user_id, version)


@bp.get("/me")
@jwt_required()
def me():
    return user_schema.dump(service.get_user(current_user_id()))


@bp.delete("/me")
@jwt_required()
@throttling.limit("LOGIN_RATE_LIMIT")
def delete_me():
    user_id = current_user_id()
    body = load_body(delete_account_schema)
    with throttling.password_attempt(f"user:{user_id}"):
        service.delete_account(user_id=user_id, **body)
    return _no_content()


@bp.post("/change-password")
@jwt_required()
@throttling.limit("LOGIN_RATE_LIMIT")
def change_password():
    user_id = current_user_id()
    body = load_body(change_password_schema)
    with throttling.password_attempt(f"user:{user_id}"):
        version = service.change_password(user_id=user_id, **body)
    return token_response(user_id, version)


@bp.post("/logout")
@jwt_required()
def logout():
    revoke(get_jwt())
    return _no_content()


@bp.post("/logout-all")
@jwt_required()
def logout_all():
    service.log_out_everywhere(user_id=current_user_id())
    return _no_content()
