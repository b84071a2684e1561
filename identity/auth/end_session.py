"""RP-Initiated Logout (/end_session): the provider checks the app's request, the person
confirms when it is not clear that they asked, and the funnel signs them out.

The route belongs to the provider's blueprint (its endpoint is `oidc.end_session`, under the
provider's request checks); it lives here because signing out is the funnel's
(identity.auth.signin.sign_out), which sits above the provider."""

from __future__ import annotations

from authlib.oauth2 import OAuth2Error
from flask import render_template, request
from flask_login import current_user
from flask_wtf.csrf import validate_csrf
from wtforms.validators import ValidationError

from identity import audit
from identity.auth.signin import sign_out
from identity.errors import render_error
from identity.extensions import csrf, db
from identity.forms import PostForm
from identity.oidc import bp as oidc_bp
from identity.oidc import subjects
from identity.oidc.server import server


@oidc_bp.route("/end_session", methods=["GET", "POST"])
@csrf.exempt  # apps may POST here (RP-Initiated Logout); our own confirmation form is checked
def end_session():
    try:
        ending = server().validate_endpoint_request("end_session")
    except OAuth2Error as error:
        return render_error(400, f"This sign-out request is not valid: {error.description}")
    confirmed = False
    if request.method == "POST" and "csrf_token" in request.form:
        try:
            validate_csrf(request.form["csrf_token"])
        except ValidationError:
            return render_error(400, "This form has expired. Reload the page and try again.")
        confirmed = True
    # Without a hint, or with a hint about someone else than who is signed in here, the
    # person decides (a link from anywhere must not sign them out unasked).
    someone_else = (
        ending.id_token_claims is not None
        and current_user.is_authenticated
        and ending.id_token_claims.get("sub") != subjects.subject_for(ending.client, current_user)
    )
    if (
        (ending.needs_confirmation or someone_else)
        and not confirmed
        and current_user.is_authenticated
    ):
        return render_template(
            "oidc/end_session.html", client=ending.client, form=PostForm(), action=request.full_path
        )
    if current_user.is_authenticated:
        audit.record("signout", current_user._get_current_object(), via="end_session")
        db.session.commit()
    response = server().create_endpoint_response("end_session", ending)
    sign_out()
    if response is not None and response.status_code == 302:
        return response
    return render_template("oidc/signed_out.html", client=ending.client)
