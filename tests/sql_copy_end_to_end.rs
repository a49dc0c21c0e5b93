//! SqlCopy run by the executor on every configured backend (as the flowrun database): the cursor is saved
//! as the flow's state with a successful run only.

use flowrun_app::App;
use flowrun_domain::{DataFlow, FlowName, NewDataFlow, RunInterval, RunStatus};
use flowrun_test_support::{Kind, execute_sql, fresh_database};
use flowrun_tests::{fresh_databases, open};
use serde_json::{Value, json};

async fn state(app: &App, flow: &DataFlow) -> Option<Value> {
    app.flows
        .find_by_id(flow.id)
        .await
        .expect("query")
        .expect("found")
        .state
}

#[tokio::test]
async fn the_cursor_is_saved_with_a_successful_run_and_kept_by_a_failed_one() {
    for db in fresh_databases().await {
        let (app, k) = (open(&db).await, db.kind.name());
        let source = fresh_database(Kind::Sqlite).await;
        let sink = fresh_database(Kind::Sqlite).await;
        let source_url = format!("{}?mode=rwc", source.url);
        execute_sql(
            &source_url,
            "CREATE TABLE src (id INTEGER PRIMARY KEY, amount DECIMAL_TEXT); \
             INSERT INTO src VALUES (1, '1.10'), (2, '2.20'), (3, '3.30');",
        )
        .await;
        let new = NewDataFlow::new(
            FlowName::parse("copy").expect("name"),
            "",
            true,
            json!({"class_name": "SqlCopy", "source": source_url, "query": "SELECT id, amount FROM src",
                   "sink": sink.url, "table": "dst", "key": ["id"], "cursor": "id", "create_table": true}),
            RunInterval::DEFAULT.schedule(),
        )
        .expect("valid");
        let flow = app.flows.create(new, app.clock.now()).await.expect("created");

        let run = app
            .executor
            .execute(&flow)
            .await
            .unwrap_or_else(|e| panic!("{k}: {e}"));
        assert_eq!(run.status, RunStatus::Success, "{k}");
        let saved = json!({"column": "id", "cursor": {"type": "i64", "value": 3}});
        assert_eq!(state(&app, &flow).await, Some(saved.clone()), "{k}");

        execute_sql(&source_url, "INSERT INTO src VALUES (4, 'four');").await;
        let flow = app
            .flows
            .find_by_id(flow.id)
            .await
            .expect("query")
            .expect("found");
        let error = app
            .executor
            .execute(&flow)
            .await
            .expect_err("a bad decimal fails the run");
        assert!(
            error.to_string().contains("`four` is not a decimal number"),
            "{k}: {error}"
        );
        assert_eq!(
            state(&app, &flow).await,
            Some(saved),
            "{k}: a failed run keeps the cursor"
        );

        execute_sql(&source_url, "UPDATE src SET amount = '4.40' WHERE id = 4;").await;
        let flow = app
            .flows
            .find_by_id(flow.id)
            .await
            .expect("query")
            .expect("found");
        let run = app
            .executor
            .execute(&flow)
            .await
            .unwrap_or_else(|e| panic!("{k}: {e}"));
        assert_eq!(run.status, RunStatus::Success, "{k}");
        assert_eq!(
            state(&app, &flow).await,
            Some(json!({"column": "id", "cursor": {"type": "i64", "value": 4}})),
            "{k}"
        );
    }
}
