/* What a refused request means for the person at the page, in their words: the API's own messages speak to
   programmers (headers, roles), and both pages have a key field that is the answer. */
function accessProblem(status, keyGiven) {
  if (status === 401) {
    return keyGiven
      ? "This API key is not accepted. Check it in the API key field above, or ask whoever runs this server for one."
      : "This server asks for an API key. Type yours in the API key field above (whoever runs the server gives them).";
  }
  if (status === 403) {
    return "Your API key may not do this: recording a verdict or adding cases needs a reviewer's key. " +
      "Ask whoever runs this server.";
  }
  return null;
}
