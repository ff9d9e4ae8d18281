//! The receiver's server side: accepting connections, serving each, answering a request from its
//! path's script.

use super::*;

pub(super) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
                // e.g. out of file descriptors: do not spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

pub(super) async fn serve_connection(stream: tokio::net::TcpStream, shared: Arc<Shared>) {
    // A `Reply::close` or `Reply::reset` trips this; the connection future is then dropped,
    // which closes the socket without writing anything (with a reset when armed).
    let close = Arc::new(Notify::new());
    let (stream, reset) = ResettableStream::new(stream);
    let service = {
        let close = Arc::clone(&close);
        service_fn(move |request| {
            let (shared, close, reset) = (Arc::clone(&shared), Arc::clone(&close), reset.clone());
            async move { handle(request, &shared, &close, &reset).await }
        })
    };
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = connection => {}
        () = close.notified() => {}
    }
}

pub(super) async fn handle(
    request: Request<Incoming>,
    shared: &Shared,
    close: &Notify,
    reset: &ResetSwitch,
) -> Result<Response<Either<Full<Bytes>, Trickle>>, Infallible> {
    let (parts, body) = request.into_parts();
    // A body that breaks off is recorded as far as it got.
    let body = body
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    let mut headers: HashMap<String, String> = HashMap::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let reply = shared.take(Received {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers,
        body,
        arrived: Instant::now(),
    });
    if reply.held
        && let Ok(permit) = shared.gate.acquire().await
    {
        permit.forget();
    }
    if let Some(delay) = reply.delay {
        tokio::time::sleep(delay).await;
    }
    match reply.action {
        Action::Answer => {}
        Action::Hang => std::future::pending::<()>().await,
        Action::Close => {
            close.notify_one();
            std::future::pending::<()>().await;
        }
        Action::Reset => {
            reset.arm();
            close.notify_one();
            std::future::pending::<()>().await;
        }
    }
    let body = match reply.trickle {
        Some(every) => {
            let body = if reply.body.is_empty() {
                Bytes::from_static(&[b'.'; 64])
            } else {
                reply.body
            };
            Either::Right(Trickle::new(body, every))
        }
        None => Either::Left(Full::new(reply.body)),
    };
    let mut response = Response::new(body);
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(retry_after) = reply.retry_after
        && let Ok(value) = http::HeaderValue::from_str(&retry_after)
    {
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, value);
    }
    if let Some(location) = reply.location
        && let Ok(value) = http::HeaderValue::from_str(&location)
    {
        response.headers_mut().insert(http::header::LOCATION, value);
    }
    Ok(response)
}
