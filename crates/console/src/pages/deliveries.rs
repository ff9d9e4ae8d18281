//! One delivery sent again by hand: the API's `POST /deliveries/{id}/retry`.

use actix_web::{HttpResponse, web};

use crate::Console;
use crate::actions::Action;
use crate::error::ConsoleError;
use crate::form::Fields;
use crate::session::Session;

/// Where a form may send the operator back to: a console page.
pub(super) fn back(fields: &Fields, default: &str) -> String {
    fields
        .get("back")
        .filter(|b| b.starts_with("/console/") && !b.contains("//") && !b.contains('\\'))
        .unwrap_or(default)
        .to_owned()
}

pub async fn retry(
    session: Session,
    id: web::Path<i64>,
    console: web::Data<Console>,
    body: web::Bytes,
) -> Result<HttpResponse, ConsoleError> {
    let fields = Fields::from_bytes(&body)?;
    session.check_csrf(fields.get("csrf"))?;
    console
        .actions
        .run(
            &session.tenant,
            Action::RetryDelivery {
                id: id.into_inner(),
            },
        )
        .await
        .map_err(ConsoleError::Refused)?;
    Ok(super::see_other(&back(&fields, "/console/failed")))
}
