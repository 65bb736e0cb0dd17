#include <catch2/catch.hpp>

#include "engine/templates.h"

using namespace herald;
using Catch::Matchers::Contains;

namespace {
EventTypeConfig Type() {
  EventTypeConfig t;
  t.name = "billing.invoice.paid";
  t.channels = {"email", "push"};
  t.templates["email"]["en"] = {{"subject", "Invoice {{number}} paid"},
                                {"text", "Paid: {{amount}} by {{payer}}"},
                                {"html", "<p>Paid: <b>{{amount}}</b> by {{payer}}{{#items}}<li>{{.}}</li>{{/items}}</p>"}};
  t.templates["email"]["de"] = {{"subject", "Rechnung {{number}} bezahlt"}, {"text", "Bezahlt: {{amount}}"}};
  t.templates["push"]["en"] = {{"title", "{{payer}}\r\nBcc: x@evil"}, {"body", "{{amount}}"}};
  return t;
}
const nlohmann::json kVars = {{"number", 42}, {"amount", "12.00 EUR"}, {"payer", "Ada <ada@x> & Co"},
                              {"items", {"<a>", "b"}}};
}  // namespace

TEST_CASE("Templates: variables render raw in text and escaped in HTML") {
  RenderedContent out;
  REQUIRE(Render(Type(), "email", "en", "en", kVars, out).ok());
  CHECK(out.locale == "en");
  CHECK(out.fields["subject"] == "Invoice 42 paid");
  CHECK(out.fields["text"] == "Paid: 12.00 EUR by Ada <ada@x> & Co");
  CHECK(out.fields["html"] == "<p>Paid: <b>12.00 EUR</b> by Ada &lt;ada@x&gt; &amp; Co<li>&lt;a&gt;</li><li>b</li></p>");
}

TEST_CASE("Templates: locale falls back from region to language to the default") {
  RenderedContent out;
  REQUIRE(Render(Type(), "email", "de-AT", "en", kVars, out).ok());
  CHECK(out.locale == "de");
  CHECK(out.fields["subject"] == "Rechnung 42 bezahlt");
  REQUIRE(Render(Type(), "email", "fr", "en", kVars, out).ok());
  CHECK(out.locale == "en");
  CHECK(Render(Type(), "webhook", "en", "en", kVars, out).code() == Status::Code::kNotFound);
}

TEST_CASE("Templates: titles and subjects never carry CR or LF") {
  RenderedContent out;
  REQUIRE(Render(Type(), "push", "en", "en", kVars, out).ok());
  CHECK(out.fields["title"] == "Ada <ada@x> & Co Bcc: x@evil");
  nlohmann::json evil = kVars;
  evil["number"] = "1\r\nBcc: victim@example.org";
  REQUIRE(Render(Type(), "email", "en", "en", evil, out).ok());
  CHECK(out.fields["subject"].find_first_of("\r\n") == std::string::npos);
}

TEST_CASE("Templates: syntax errors are found before they can render wrongly") {
  CHECK(CheckTemplateSyntax("Hi {{name}}, {{#items}}{{.}}{{/items}} {{! note }}{{{raw}}}").empty());
  CHECK_THAT(CheckTemplateSyntax("Hi {{name"), Contains("never closed"));
  CHECK_THAT(CheckTemplateSyntax("{{#a}}x"), Contains("section \"a\" is never closed"));
  CHECK_THAT(CheckTemplateSyntax("{{#a}}{{/b}}"), Contains("closes section \"a\""));
  CHECK_THAT(CheckTemplateSyntax("{{/a}}"), Contains("never opened"));
  CHECK_THAT(CheckTemplateSyntax("{{> header}}"), Contains("partials"));
  CHECK_THAT(CheckTemplateSyntax("{{=<% %>=}}"), Contains("delimiter"));
  Config c = LoadConfigText("{}", "t", {});
  EventTypeConfig t = Type();
  t.templates["push"]["en"]["body"] = "{{#x}}";
  c.event_types[t.name] = t;
  try {
    CheckTemplates(c);
    FAIL("expected a ConfigError");
  } catch (const ConfigError& e) {
    CHECK_THAT(e.what(), Contains("event_types.billing.invoice.paid.templates.push.en.body: section \"x\""));
  }
}
