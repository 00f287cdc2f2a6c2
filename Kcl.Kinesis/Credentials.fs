(*
    AWS credentials: an explicit key pair, the standard environment variables, or a profile in the shared
    credentials and config files. SSO, web identity and instance metadata are not supported (see the README).
*)
namespace Kcl.Kinesis

open System
open System.IO

/// Reading the shared credentials and config files (INI): pure, over their text.
[<RequireQualifiedAccess>]
module internal SharedFiles =
    /// The sections of an INI text: name -> keys (lower-case) -> values; later keys win.
    let sections (text: string) : Map<string, Map<string, string>> =
        let mutable result = Map.empty
        let mutable current = None

        for raw in text.Split('\n') do
            let line = raw.Trim()

            if line.StartsWith "[" && line.EndsWith "]" then
                let name = line.Substring(1, line.Length - 2).Trim()
                current <- Some name

                if not (result.ContainsKey name) then
                    result <- result.Add(name, Map.empty)
            elif line.Length > 0 && not (line.StartsWith "#") && not (line.StartsWith ";") then
                match current, line.IndexOf '=' with
                | Some section, i when i > 0 ->
                    let key = line.Substring(0, i).Trim().ToLowerInvariant()
                    let value = line.Substring(i + 1).Trim()
                    result <- result.Add(section, result[section].Add(key, value))
                | _ -> ()

        result

    /// A profile's key pair and token: the credentials file names sections by the profile, the config file by
    /// "profile NAME" (except "default"); the credentials file wins.
    let credentials
        (profile: string)
        (credentialsText: string)
        (configText: string)
        : (string * string * string option) option =
        let pick (sections: Map<string, Map<string, string>>) name =
            sections
            |> Map.tryFind name
            |> Option.bind (fun keys ->
                match keys.TryFind "aws_access_key_id", keys.TryFind "aws_secret_access_key" with
                | Some key, Some secret when key <> "" && secret <> "" ->
                    Some(key, secret, keys.TryFind "aws_session_token" |> Option.filter ((<>) ""))
                | _ -> None)

        let configName =
            if profile = "default" then "default" else "profile " + profile

        pick (sections credentialsText) profile
        |> Option.orElse (pick (sections configText) configName)

/// An access key pair, with the session token of temporary credentials.
[<Sealed; AllowNullLiteral>]
type AwsCredentials(accessKeyId: string, secretAccessKey: string, sessionToken: string) =
    do
        if String.IsNullOrWhiteSpace accessKeyId then
            invalidArg (nameof accessKeyId) "the access key id is empty"

        if String.IsNullOrEmpty secretAccessKey then
            invalidArg (nameof secretAccessKey) "the secret access key is empty"

    /// A long-term key pair, without a session token.
    new(accessKeyId, secretAccessKey) = AwsCredentials(accessKeyId, secretAccessKey, null)

    /// The access key id (AKIA… or ASIA…).
    member _.AccessKeyId = accessKeyId
    /// The secret access key.
    member _.SecretAccessKey = secretAccessKey
    /// The session token of temporary credentials, or null.
    member _.SessionToken = if String.IsNullOrEmpty sessionToken then null else sessionToken
    /// Where the credentials came from, for messages (never the secret).
    member val Source = "explicit key pair" with get, set

    /// Credentials from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, or null when the first two
    /// are not both set.
    static member FromEnvironment() : AwsCredentials =
        let get (name: string) = Environment.GetEnvironmentVariable name

        match get "AWS_ACCESS_KEY_ID", get "AWS_SECRET_ACCESS_KEY" with
        | key, secret when not (String.IsNullOrEmpty key) && not (String.IsNullOrEmpty secret) ->
            AwsCredentials(key, secret, get "AWS_SESSION_TOKEN", Source = "environment variables")
        | _ -> null

    /// Credentials of a profile in the shared credentials file (AWS_SHARED_CREDENTIALS_FILE, default
    /// ~/.aws/credentials) or config file (AWS_CONFIG_FILE, default ~/.aws/config), or null when neither has a
    /// key pair for it.
    static member FromProfile(profile: string) : AwsCredentials =
        let home = Environment.GetFolderPath Environment.SpecialFolder.UserProfile

        let file variable name =
            match Environment.GetEnvironmentVariable variable with
            | null
            | "" -> Path.Combine(home, ".aws", name)
            | path -> path

        let read path =
            if File.Exists path then File.ReadAllText path else ""

        match
            SharedFiles.credentials
                profile
                (read (file "AWS_SHARED_CREDENTIALS_FILE" "credentials"))
                (read (file "AWS_CONFIG_FILE" "config"))
        with
        | Some(key, secret, token) ->
            AwsCredentials(key, secret, Option.toObj token, Source = sprintf "profile '%s' in the shared files" profile)
        | None -> null

    /// The default chain: the environment variables, then the profile named by AWS_PROFILE (default "default").
    /// Throws when neither has credentials, naming what was tried.
    static member Resolve() : AwsCredentials =
        match AwsCredentials.FromEnvironment() with
        | null ->
            let profile =
                match Environment.GetEnvironmentVariable "AWS_PROFILE" with
                | null
                | "" -> "default"
                | p -> p

            match AwsCredentials.FromProfile profile with
            | null ->
                raise (
                    InvalidOperationException(
                        sprintf
                            "no AWS credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are not set and profile '%s' has no aws_access_key_id/aws_secret_access_key in the shared credentials or config file (SSO, web identity and instance metadata are not supported)"
                            profile
                    )
                )
            | c -> c
        | c -> c

