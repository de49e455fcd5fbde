"""The token endpoint written the quickstart way (FastAPI + Mangum + behest-ai), for comparison only."""

from typing import Any

from behest import Behest
from fastapi import Depends, FastAPI, HTTPException, Request
from mangum import Mangum

app = FastAPI()
behest = Behest()


def require_user(request: Request) -> dict[str, Any]:
    """The verified session: API Gateway's JWT authorizer claims, as Mangum hands them over."""
    claims = request.scope["aws.event"]["requestContext"]["authorizer"]["jwt"]["claims"]
    return {"id": claims["sub"], "plan": None}


@app.post("/api/behest/token")
def mint_token(user: dict[str, Any] = Depends(require_user)) -> dict[str, Any]:
    try:
        result = behest.auth.mint(user_id=user["id"], tier=user["plan"] or 1, ttl=900)
    except Exception as e:
        raise HTTPException(500, str(e)) from e
    return {"token": result.token, "ttl": result.ttl, "sessionId": result.session_id, "expiresAt": result.expires_at}


handler = Mangum(app, lifespan="off")
