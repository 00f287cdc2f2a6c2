(* The command line's `--inject-checkpoint-error NAME[:COUNT][@FROM]`, read into the core's fault rules. *)
[<RequireQualifiedAccess>]
module Kcl.Local.FaultSpec

open System
open Kcl.Core

/// Reads `NAME[:COUNT][@FROM]`: NAME is a Java exception's simple name (the "Exception" suffix may be left out for
/// the known ones), COUNT the number of failures in a row (default 1, `*` for every one from then on), FROM the
/// 1-based index of the first failing checkpoint request, counted per shard (default 1).
let parse (spec: string) : Result<FaultRule, string> =
    let spec = if isNull spec then "" else spec.Trim()

    let body, from =
        match spec.LastIndexOf '@' with
        | -1 -> spec, Ok 1
        | at ->
            spec.Substring(0, at),
            match Int32.TryParse(spec.Substring(at + 1)) with
            | true, n when n >= 1 -> Ok n
            | _ -> Error(sprintf "%A: FROM must be a whole number from 1" spec)

    let name, count =
        match body.IndexOf ':' with
        | -1 -> body, Ok(Some 1)
        | colon ->
            body.Substring(0, colon),
            match body.Substring(colon + 1) with
            | "*" -> Ok None
            | text ->
                match Int32.TryParse text with
                | true, n when n >= 1 -> Ok(Some n)
                | _ -> Error(sprintf "%A: COUNT must be a whole number from 1, or *" spec)

    let error =
        match CheckpointError.OfName name with
        | CheckpointError.Other _ as other ->
            match CheckpointError.OfName(name + "Exception") with
            | CheckpointError.Other _ -> other
            | known -> known
        | known -> known

    if
        String.IsNullOrWhiteSpace name
        || name
           |> Seq.exists (fun c -> not (Char.IsAsciiLetterOrDigit c || c = '.' || c = '_' || c = '$'))
    then
        Error(sprintf "%A: expected NAME[:COUNT][@FROM], e.g. ThrottlingException:2 or ShutdownException:*@3" spec)
    else
        match count, from with
        | Error e, _
        | _, Error e -> Error e
        | Ok count, Ok from ->
            Ok
                {
                    Error = error
                    Count = count
                    From = from
                }
