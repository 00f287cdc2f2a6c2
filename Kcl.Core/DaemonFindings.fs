(*
    The sentences of the daemon session's findings: each names what went wrong and what the real daemon would do
    (PROTOCOL.md §4.2, §4.5, §4.6). Kept apart so the session's logic reads as logic.
*)
module internal Kcl.Core.DaemonFindings

/// The message of a finding. `openAction` is the action awaiting its status, `lastAction` the open or last one
/// sent, `checkpoint` the lease's checkpoint.
let describe
    (kind: FindingKind)
    (openAction: string option)
    (lastAction: string option)
    (checkpoint: ExtendedSequenceNumber option)
    =
    let during = defaultArg lastAction "no action"

    match kind with
    | FindingKind.NullLine ->
        "the line is the JSON literal null: the daemon's Optional.of(null) throws a NullPointerException, so it stops the child and exits with code 1, ending every shard"
    | FindingKind.UnparseableLine error ->
        match openAction with
        | Some action ->
            sprintf
                "the daemon cannot parse this line (%s), so it skips it (\"Skipping unexpected line on STDOUT\") and keeps waiting for the status of %s: if the line was meant as the status, the shard hangs"
                (error.Describe())
                action
        | None ->
            sprintf
                "the daemon cannot parse this line (%s): it skips it when it next reads the child's output"
                (error.Describe())
    | FindingKind.CheckpointNotAllowed ->
        sprintf
            "a checkpoint where none is allowed: %s has no checkpointer, so the daemon answers InvalidStateException (\"no checkpointer was provided\") and keeps waiting for the status"
            during
    | FindingKind.CheckpointAfterStatus ->
        "a checkpoint sent after the status: no action is open, so the daemon leaves it unread until the next action and then answers it against that action's checkpointer"
    | FindingKind.StatusWithoutAction responseFor when responseFor.IsSome && responseFor = lastAction ->
        sprintf
            "two statuses for one action (%s): the daemon reads the second as the answer to the next action, which fails validation unless that action has the same name, and then exits with code 1"
            during
    | FindingKind.StatusWithoutAction _ ->
        "a status with no action open: the daemon reads it as the answer to the next action, which fails validation, and then exits with code 1"
    | FindingKind.WrongResponseFor(expected, actual) ->
        let shown = actual |> Option.map (sprintf "\"%s\"") |> Option.defaultValue "null"

        if expected = "shutdownRequested" then
            sprintf
                "wrong responseFor: shutdownRequested was answered with %s; for shutdownRequested the daemon only logs \"Child process failed to complete shutdown notification.\" and carries on"
                shown
        else
            sprintf
                "wrong responseFor: %s was answered with %s, so validateStatusMessage fails: the daemon closes the child's stdin, waits for it to exit and calls System.exit(1), ending every shard"
                expected
                shown
    | FindingKind.MissingShardEndCheckpoint ->
        sprintf
            "missing SHARD_END checkpoint: %s was answered while the lease's checkpoint is %s, so ShutdownTask throws and retries forever against the closed child: the shard is wedged and its child shards never start"
            during
            (checkpoint |> Option.map string |> Option.defaultValue "none")
    | FindingKind.NoExitAfterEndOfInput ->
        "the child did not exit after stdin EOF: the daemon waits in process.waitFor() with no timeout, so this shard's shutdown blocks forever"
    | FindingKind.TimedOut ->
        sprintf
            "timed out waiting for a message during %s: with timeoutInSeconds set the daemon halts the JVM (Runtime.halt(1)), ending every shard; without it, it waits forever"
            during
    | FindingKind.ChildExited code ->
        let code = code |> Option.map (sprintf " with code %d") |> Option.defaultValue ""

        match openAction with
        | Some action ->
            sprintf
                "the child exited%s during %s: the daemon reads end of input while waiting for the status and exits with code 1, ending every shard"
                code
                action
        | None ->
            sprintf
                "the child exited%s after %s: the daemon's next write fails and it exits with code 1, ending every shard"
                code
                during
